"""The split exchange's messages (mode = split) and what they carry.

A split device's round is a dialogue the server leads, since Flower's nodes only answer:
``START`` (the global prompt; the device takes its local-loss steps, prunes its data and answers
with its first batch's cut-layer activations), then per step ``LOSS`` (the server's body output;
the device answers with the loss gradient at it) and ``BACKWARD`` (the gradient at the cut; the
device steps its prompt and answers with the next batch's activations, or none after the last),
and last the round's ordinary ``train`` message, answered with the trained prompt.
"""

START = "split_start"
LOSS = "split_loss"
BACKWARD = "split_backward"

STEP = "split-step"  # which step a message belongs to; a device answers only its own next one
ACTIVATIONS = "activations"
ATTENTION_MASK = "attention-mask"
GRADIENT = "gradient"
LOCAL_LOSS = "local-loss"
KEPT_EXAMPLES = "kept-examples"
