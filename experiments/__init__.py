"""The experiment modules: `python -m experiments.<name>` in a checkout; installed as
`mmreg.experiments`, behind the console commands `mmreg-<name>` (see mmreg.cli)."""
