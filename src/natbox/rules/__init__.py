"""The iptables language (iptables v1.8.9, nf_tables backend) and its evaluation (x_tables, ip_tables.c).

- `parser.parse_argv(argv) -> Command`, `parser.parse_restore(text, file=...) -> [RestoreTable]`
- `evaluate.Ruleset`: `execute(cmd) -> str` (iptables' stdout), `restore(blocks, noflush=...)`,
  `run(table, hook, skb, ctx) -> NF_ACCEPT | NF_DROP`, `is_trivial(table, hook)`
- `printer.save_tables(tables, date, counters=...)` (iptables-save), `printer.list_rules` (-S),
  `listing.list_table` (-L)
- `model`: `Table`, `Chain`, `Rule`, `Match`/`Target` base classes, `RulesError`, the extension registry
- `matches/`, `targets/`: one module per extension (parse, save, -L text, kernel checks, compiled closure)

Adding an extension: subclass `Match` or `Target` in a new module and add the class to `ALL` in
`matches/__init__.py` / `targets/__init__.py`; `extensions.py` finds it by name and aliases.
"""
