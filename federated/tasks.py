"""The two tasks fedtune trains, named once for the model, data and loss code alike, and the
way a causal LM takes the classification task (its data, loss and metrics stay the classifier's)."""

TASK_CAUSAL_LM = "causal-lm"
TASK_CLASSIFICATION = "classification"
TASKS = (TASK_CAUSAL_LM, TASK_CLASSIFICATION)
TASK_CLASSIFICATION_AS_GENERATION = "classification-as-generation"
