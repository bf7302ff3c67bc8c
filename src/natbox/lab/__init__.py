"""Labs: topologies of network namespaces (clients, a natbox gateway, servers) built from a TOML file."""

from natbox.lab.builder import lab_down, lab_exec_argv, lab_up, plan_down, plan_up
from natbox.lab.model import Lab, LabError, parse_lab_toml

__all__ = ["Lab", "LabError", "lab_down", "lab_exec_argv", "lab_up", "parse_lab_toml", "plan_down", "plan_up"]
