"""What every layer of the exporter shares, and which imports nothing else of it: the data model
(`family`), config field types (`fields`) and the regular expressions and relabel rules a config
holds (`rules`), secrets' redaction (`redact`), the off-loop lane (`offload`), the events ring and
logging (`events`, `logs`), file stamps (`watch`).

Imports flow one way through the package: core -> format -> profiles -> sources -> pipeline -> config
-> serve -> runtime -> the command line (tests/unit/test_layers.py holds it).
"""
