"""Names of the records and entries inside the messages between server and clients.

The array and config keys are Flower's defaults, so Flower's own strategies read our messages.
"""

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

SERVER_ROUND = "server-round"
# The device simulator's plan for one client's round (what its device can do): fewer local steps
# (what it finishes by the deadline), a smaller batch or LoRA rank (what fits its memory), or
# zeroth-order steps on the LoRA factors (a mixed federation's device with inference memory only).
PLANNED_STEPS = "planned-local-steps"
PLANNED_BATCH = "planned-batch-size"
PLANNED_RANK = "planned-lora-rank"
PLANNED_MODE = "planned-mode"
PLANNED_CUT = "planned-cut-layer"  # a split device: the blocks it holds (split.cut-layer at most)
# Names the files a client keeps for a run; the same when the run is resumed.
RUN_KEY = "run-key"
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
# 1 where a node of a LoRA run takes zeroth-order steps on the factors by its own node config.
ZO_ON_FACTORS = "zo-on-factors"
TRAIN_LOSS = "train-loss"
TRAIN_STEPS = "train-steps"
TRAIN_SECONDS = "train-seconds"
PEAK_MEMORY_MB = "peak-memory-mb"
EVAL_LOSS = "eval-loss"
EVAL_PERPLEXITY = "eval-perplexity"
EVAL_ACCURACY = "eval-accuracy"
LORA_RANK = "lora-rank"
EVAL_GLOBAL_LOSS = "eval-global-loss"
EVAL_GLOBAL_ACCURACY = "eval-global-accuracy"

# The dense additions to the frozen base weights that some strategies send with the factors.
BASE_DELTA = "base-delta"

# Zeroth-order (FedKSeed) messages: a client's steps up, the seed sums (or their changes) down.
SEED_INDICES = "seed-indices"
SEED_SCALARS = "seed-scalars"
SEED_SUMS = "seed-sums"
CHANGED_INDICES = "changed-indices"
CHANGED_SUMS = "changed-sums"
SEED_PROBABILITIES = "seed-probabilities"
SUMS_VERSION = "sums-version"
SUMS_BASE_VERSION = "sums-base-version"
ZO_LR = "zo-lr"  # the rate every step and replay takes: a zo.lr = 0 run's probed one
# Node state: the seed sums a client last synced, and their version.
ZO_SUMS = "zo-sums"
ZO_SUMS_VERSION = "zo-sums-version"
# zo.params = sensitive: the mask the server sent, kept in the node state.
ZO_MASK = "zo-mask"

# What a client computes from its data without noise. A record-level DP client never sends
# them: they would be releases its accountant does not cover.
UNNOISED_TRAIN_METRICS = (TRAIN_LOSS, TRAIN_SECONDS, PEAK_MEMORY_MB)

# Record-level DP: the epsilon a client has spent, and its reply when its budget is spent.
DP_EPSILON = "dp-epsilon"
DP_DECLINED = "dp-budget-spent"
DP_EPSILON_NEXT = "dp-epsilon-next"
# Node state: the data sources this node has trained on under record-level DP, a witness beside
# the index on disk (``client.privacy_state``).
DP_STATE = "dp-state"
