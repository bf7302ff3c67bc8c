"""Differential testing of natbox against the Linux kernel (§10): scenarios, kernel runs, replays, comparison."""
