"""The bench: where training time goes (`python -m distjob.bench`, see cli.py)."""
