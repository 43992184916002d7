"""The command-line doors: `python -m pipeline STEP`, each a thin door onto one step."""
