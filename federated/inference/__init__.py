"""Using what a run trained: its model loaded from the run's folder, generation, evaluation."""

# ``fedtune evaluate --data``'s name for the run's own test set (light: the command line's help
# reads it without importing the models).
BUILT_IN = "built-in"
