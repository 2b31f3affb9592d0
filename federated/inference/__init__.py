"""Using what a run trained: its model loaded from the run's folder, generation, evaluation."""
