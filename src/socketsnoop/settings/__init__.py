"""The settings: each option declared once (option.py: the Option record, the parser, the typed settings;
monitor.py: the monitor's options and the commands' list; the filters' own declarations are in
pipeline/filters.py), the config file that holds them (file.py, trusted as trust.py says) and the systemd
sandbox they need (sandbox.py). Below the commands, above the outputs whose values they check."""
