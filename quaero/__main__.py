"""`python -m quaero`: the command line."""
from quaero.cli import entry

entry()
