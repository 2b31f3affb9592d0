"""The two tasks fedtune trains, named once for the model, data and loss code alike."""

TASK_CAUSAL_LM = "causal-lm"
TASK_CLASSIFICATION = "classification"
TASKS = (TASK_CAUSAL_LM, TASK_CLASSIFICATION)
