"""The spec's top-level data model (pydantic). Layers are validated per op by the expand pass."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from archc.ops.base import ID_PATTERN
from archc.tasks import REGISTRY, default_kind, losses
from archc.threads import MAX_THREADS
from archc.seeds import MAX_SEED
from archc.strategies import STRATEGIES

FORMAT_VERSION = 1
Name = Annotated[str, Field(pattern=ID_PATTERN)]
Scalar = bool | int | float | str
TASK_KINDS = tuple(REGISTRY)  # one registered class per kind (archc/tasks/)
LOSSES = losses()            # every kind's losses; validate checks the spec's against its kind's list
# A column's words, as archc.data.columns spells them (a test keeps the two equal): written out here because
# importing archc.data loads every data source and numpy, which the CLI and a spec without columns never need
COLUMN_TYPES = ("numeric", "categorical", "boolean")
MissingRule = Literal["error", "mean", "median", "most_frequent", "constant"]
UnknownRule = Literal["error", "ignore", "most_frequent"]
Encoding = Literal["onehot", "embedding"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True,
                              allow_inf_nan=False)  # a spec's numbers are finite (TOML and JSON both spell nan, inf)


class ModelInfo(Strict):
    """[model]: the model's name (used for run directories and ONNX graph names)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
    doc: str = ""


class ColumnDecl(Strict):
    """[inputs.NAME.columns] COL = { type = ..., ... }: one column of a tabular input (archc.data.columns.Column);
    an attribute left out takes the input's default (missing, indicator, unknown, scale) or the column's."""

    type: Literal[COLUMN_TYPES] = Field(description="numeric, categorical or boolean")  # type: ignore[valid-type]
    missing: MissingRule | None = Field(None, description="missing cells: error, mean, median, most_frequent or "
                                                          "constant (with fill); default: the input's")
    fill: float | str | bool | None = Field(None, description="what a missing cell becomes with missing = \"constant\"")
    indicator: bool | None = Field(None, description="add a 0/1 'was missing' feature after the column's own")
    scale: bool | None = Field(None, description="standardize with the training split's mean and std (default: "
                                                 "numeric yes, boolean no)")
    encode: Encoding = Field("onehot", description="categorical: one-hot, or an embedding of `dim` features")
    dim: Annotated[int, Field(ge=1)] | None = Field(None, description="encode = \"embedding\": features per category")
    categories: list[str | int] | None = Field(None, min_length=1, description="categorical: the categories, in "
                                                                              "encoded order (fixed in the spec)")
    max_categories: Annotated[int, Field(ge=1)] | None = Field(
        None, description="categorical: learn at most this many categories from the training split")
    unknown: UnknownRule | None = Field(None, description="categorical: a category not among the known ones: "
                                                          "error, ignore or most_frequent; default: the input's")


class Input(Strict):
    """[inputs.NAME]: one model input, per example (the batch axis is implicit and dynamic): a `shape`, or for
    a tabular input its `columns` (the width follows from them)."""

    shape: list[Annotated[int, Field(ge=1)] | Name] | None = Field(
        None, description="per-example shape; a name (\"seq\") is a symbolic axis")
    dtype: Literal["float32", "int64"] = "float32"
    vocab: Annotated[int, Field(ge=1)] | Name | None = Field(
        None, description="int64 inputs: values lie in [0, vocab) (token ids, class ids); an axis name "
                          "for indices into that axis (edge_index into 'nodes')")
    batched: bool = Field(True, description="prepend the implicit batch axis (false for whole-graph inputs)")
    columns: dict[str, Literal[COLUMN_TYPES] | ColumnDecl] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="a tabular input: its columns by name (as in the CSV header), in encoded "
                                        "order; a type (\"numeric\", \"categorical\", \"boolean\") or a table")
    missing: MissingRule = Field("error", description="columns: missing cells' default rule (mean/median: "
                                                      "categorical columns take most_frequent)")
    indicator: bool = Field(False, description="columns: add a 'was missing' feature to every column by default")
    unknown: UnknownRule = Field("error", description="columns: unseen categories' default rule")
    scale: bool | None = Field(None, description="columns: standardize numeric (and boolean) columns by default")


class Task(Strict):
    """[task]: what the outputs mean; picks the loss, the metrics and how `infer` presents results."""

    kind: Literal[TASK_KINDS] = default_kind()  # type: ignore[valid-type]
    labels: list[str] | None = Field(None, min_length=1, description="class names, in output order")
    output: Name | None = Field(None, description="the output the task reads (default: the first)")


class Use(Strict):
    """A layer that instantiates a block: { use = "NAME", with = {...}, repeat = N }."""

    use: Name
    id: Name | None = None
    from_: Name | list[Name] | None = Field(None, alias="from")
    with_: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, alias="with", description="block parameters; a list gives one value per repeat")
    repeat: Annotated[int, Field(ge=0, le=10_000)] = Field(
        1, description="instances in a chain; 0: none, the use passes its first input on")
    when: bool | str = Field(True, description="false (or an expression that is): left out, as with repeat = 0")


class Block(Strict):
    """[blocks.NAME]: a reusable sub-graph with parameters; its inputs are named in `inputs`."""

    params: dict[Name, Scalar] = Field(default_factory=dict, description="parameters and their defaults")
    inputs: list[Name] = Field(default_factory=lambda: ["x"], min_length=1)
    output: Name | None = Field(None, description="the node whose value the block returns (default: last)")
    layers: list[dict[str, Any]] = Field(min_length=1)


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = [0.9, 0.999]


class Schedule(Strict):
    name: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)


class DiffusionRecipe(Strict):
    """[train] diffusion = { steps, schedule }: the DDPM forward process the denoiser is trained for."""

    steps: int = Field(1000, ge=2, le=100_000, description="diffusion timesteps T (t = 0 .. T-1)")
    schedule: Literal["linear", "cosine"] = Field(
        "cosine", description="betas: 'linear' (Ho et al., scaled to T) or 'cosine' (Nichol & Dhariwal)")


class Lora(Strict):
    """[train.lora]: low-rank adapters on linear layers (Hu et al. 2021, "LoRA"); merged into the weights at export."""

    rank: int = Field(8, ge=1, le=4096, description="rank r of each adapter (A: r x in, B: out x r)")
    alpha: float = Field(16.0, gt=0, description="scale: an adapter adds (alpha / rank) B A to its weight")
    targets: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description=(
        "linear layers that get an adapter: node ids or patterns ({i} for an index, * for one name), a node "
        "naming all of its projections (attention's q/k/v/out, gated_mlp's gate/up/down)"))
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on an adapter's input while training")


class Train(Strict):
    """[train]: the training recipe (flags on the command line override it)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    schedule: Literal["constant", "step", "cosine", "onecycle"] | Schedule = "constant"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    loss: Literal[LOSSES] | None = Field(  # type: ignore[valid-type]
        None, description="the task kind's loss (default: its first; archc.tasks lists each kind's)")
    seed: Seed = 0
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every N optimizer steps")
    checkpoint_minutes: float = Field(10.0, ge=0, le=10_000, description=(
        "also checkpoint when this many minutes have passed since the last checkpoint, mid-epoch (0: off), so a "
        "long epoch is never lost whole"))
    monitor: Literal["metric", "loss", "last"] = Field(
        "metric", description="validation quantity that picks the best checkpoint and drives early stopping "
                              "('last': every epoch improves, so the final weights are kept; no early stop)")
    compile: bool = Field(False, description="train through torch.compile (its first steps compile for seconds to "
                                             "minutes; see benchmarks figure 13 for what it gains)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="CUDA autocast dtype (auto: bf16 where supported, else fp16); CPU trains in fp32")
    diffusion: DiffusionRecipe | None = Field(
        None, description="task kind diffusion: timesteps and beta schedule (default 1000 steps, cosine)")
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description=(
        "torch threads of each training process (default: its cores, fewer when the machine is busy or loader "
        "workers share them; --threads overrides)"))
    accumulate: int = Field(1, ge=1, le=65_536, description=(
        "gradient accumulation: batches per optimizer step (an effective batch of accumulate x batch_size); "
        "steps, the schedule and checkpoint_every count optimizer steps"))
    freeze: list[Annotated[str, Field(min_length=1)]] | None = Field(None, description=(
        "parameters that do not train: node ids or patterns ({i} for an index, * for one name) over the spec's "
        "parameter names (layers.{i}.self_attn, embed_tokens.weight); with [train.lora], default: every weight "
        "but the adapters"))
    lora: Lora | None = Field(None, description="low-rank adapters (off); merged into the weights at export")
    strategy: Literal[STRATEGIES] = Field(  # type: ignore[valid-type]
        "ddp", description=("how --nproc ranks share the model: ddp (a full copy of weights, gradients and optimizer "
                            "state on every rank) or fsdp (FSDP2: each block's weights, gradients and optimizer "
                            "state sharded over the ranks; sharded checkpoints that resume at another --nproc); "
                            "--strategy overrides"))
    activation_checkpointing: bool = Field(False, description=(
        "keep only each block's input for the backward pass and recompute the block's activations there (less "
        "memory, about a third more compute); blocks: each instance of a [blocks.*] use and repeat"))

    @model_validator(mode="after")
    def _sharded_adapters(self) -> "Train":
        if self.strategy == "fsdp" and self.lora is not None:
            raise ValueError("strategy = \"ddp\" with [train.lora] (the adapters train few parameters, and fsdp "
                             "does not shard them)")
        return self


Prob = Annotated[float, Field(ge=0, le=1)]


def _ordered(pair: list[float]) -> list[float]:
    """A [low, high] range: low <= high."""
    if pair[0] > pair[1]:
        raise ValueError("[low, high] with low <= high")
    return pair


Range = Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
Area = Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=2, max_length=2),
                 AfterValidator(_ordered)]  # a fraction of the image's area


class Crop(Strict):
    """random_resized_crop: a crop of a random area fraction and aspect ratio, resized back to the input's size."""

    scale: Area = [0.08, 1.0]
    ratio: Range = [3 / 4, 4 / 3]


class ColorJitter(Strict):
    """color_jitter: random brightness, contrast, saturation and hue, applied with probability p."""

    brightness: Annotated[float, Field(ge=0, le=1)] = 0.0
    contrast: Annotated[float, Field(ge=0, le=1)] = 0.0
    saturation: Annotated[float, Field(ge=0, le=1)] = 0.0
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    p: Prob = 1.0


class Erasing(Strict):
    """random_erasing: with probability p, a rectangle of a random area fraction and aspect ratio set to 0."""

    p: Prob = 0.25
    scale: Area = [0.02, 0.33]
    ratio: Range = [0.3, 3.3]


class Augment(Strict):
    """[data.augment]: random transforms of training batches (training split only; never exported)."""

    random_resized_crop: Crop | None = Field(None, description="random resized crop to the input's size (off)")
    hflip: Prob = Field(0.0, description="probability of a horizontal flip")
    vflip: Prob = Field(0.0, description="probability of a vertical flip")
    rotation: Annotated[float, Field(ge=0, le=180)] = Field(0.0, description="max rotation in degrees, both ways")
    color_jitter: ColorJitter | None = Field(None, description="colour jitter (off)")
    policy: Literal["none", "randaugment", "trivialaugment"] = Field("none", description="an automatic policy")
    policy_n: Annotated[int, Field(ge=1, le=10)] = Field(2, description="RandAugment: ops per image")
    policy_m: Annotated[int, Field(ge=0, le=30)] = Field(9, description="RandAugment: magnitude, 0..30")
    random_erasing: Erasing | None = Field(None, description="random erasing (off)")
    mixup: Annotated[float, Field(ge=0)] = Field(0.0, description="mixup Beta(alpha, alpha); 0 = off")
    cutmix: Annotated[float, Field(ge=0)] = Field(0.0, description="cutmix Beta(alpha, alpha); 0 = off")
    mix_prob: Prob = Field(1.0, description="probability a batch is mixed (when mixup or cutmix is on)")
    switch_prob: Prob = Field(0.5, description="with both on: probability of cutmix instead of mixup")

    def active(self) -> bool:
        """Whether any transform is on."""
        return bool(self.random_resized_crop or self.hflip or self.vflip or self.rotation or self.color_jitter
                    or self.policy != "none" or self.random_erasing or self.mixing())

    def mixing(self) -> bool:
        """Whether batches are mixed (soft targets)."""
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0

    def spatial(self) -> bool:
        """Whether any transform needs an image (float [C, H, W] with fixed sizes)."""
        return self.active()

    def needs_rgb(self) -> bool:
        """Whether a transform needs 3 channels (kornia's saturation, hue and policies)."""
        cj = self.color_jitter
        return self.policy != "none" or bool(cj and (cj.saturation or cj.hue))


class Data(Strict):
    """[data]: where training data comes from (no downloads)."""

    source: str
    target: str | None = None
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    normalize: bool = False
    split_seed: Seed = Field(0, description="seed of the train/val/test split (kept apart from train.seed so "
                                           "runs with different seeds are scored on the same test set)")
    scale_target: bool | None = Field(None, description="standardize continuous targets with the train split's "
                                                        "mean/std in training; the exported model restores its "
                                                        "output to the targets' units (default: on for task kinds "
                                                        "that support it: regression)")
    augment: Augment = Field(default_factory=Augment, description="random transforms of training batches")
    workers: int | None = Field(None, ge=0, le=64, description="loader worker processes that read and decode a "
                                "source read per batch (default: the cores this process may use, less one, at "
                                "most 8, shared out over --nproc ranks; 0: read in the training process)")
    in_memory: bool | None = Field(None, description="read every example up front into one array (true) or per "
                                   "batch (false); default: up front when they take at most 1 GiB decoded (or an "
                                   "eighth of the machine's memory)")
    on_error: Literal["stop", "skip"] = Field("stop", description="an example that cannot be read during training "
                                              "(a corrupt image): stop the run naming the file (checkpoints kept), "
                                              "or skip it and count it")


# [low, high], its length and types checked by archc.language.sweep: pydantic would name the places "int" and
# "float", the words of its union tags, which the error locator drops
Bounds = list[Any]
SWEEP_KINDS = ("int", "float", "log_uniform", "choice")  # a [sweep] range's kinds (archc.language.sweep)


class Range(Strict):
    """One entry of [sweep]: the values `archc sweep` tries for one target (archc.language.sweep checks the rest:
    exactly one kind, low <= high, log ranges above 0, every value one the spec accepts)."""

    int_: Bounds | None = Field(None, alias="int", description="[low, high]: integers from low to high (inclusive)")
    float_: Bounds | None = Field(None, alias="float", description="[low, high]: numbers from low to high")
    log_uniform: Bounds | None = Field(None, description="[low, high]: numbers from low to high, uniform in log "
                                                         "space (low > 0)")
    choice: Annotated[list[Scalar], Field(min_length=1)] | None = Field(None, description="one of these values")
    log: bool = Field(False, description="int and float: sample in log space (low > 0)")
    step: Annotated[int | float, Field(gt=0)] | None = Field(None, description="int and float: a grid of this step "
                                                                                "from low (not with log)")


def flatten_sweep(value: Any, prefix: str = "") -> Any:
    """[sweep]'s nested tables as dotted keys: {"params": {"width": {"int": ...}}} -> {"params.width": {...}}. A
    table whose values are all tables (and which names no range kind) is a prefix; anything else is a range, left
    for the data model to check. Not a table: returned as it is (the data model says what was expected)."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        nested = isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()) and \
            not set(v) & {*SWEEP_KINDS, "log", "step"}
        for k, r in (flatten_sweep(v, name).items() if nested else [(name, v)]):
            if k in out:
                raise ValueError(f"one range per target, received '{k}' twice (dotted and as a nested table)")
            out[k] = r
    return out


class Spec(Strict):
    """A whole spec file."""

    archc: int = Field(description="spec format version")
    model: ModelInfo
    inputs: dict[Name, Input] = Field(min_length=1)
    outputs: list[Name] | None = Field(None, min_length=1, description="output node ids (default: last layer)")
    task: Task = Field(default_factory=Task)
    axes: dict[Name, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="typical sizes of symbolic axes, for estimates and export tracing")
    params: dict[Name, Scalar] = Field(default_factory=dict, description="global parameters ($name)")
    blocks: dict[Name, Block] = Field(default_factory=dict)
    layers: list[dict[str, Any]] = Field(min_length=1)
    train: Train = Field(default_factory=Train)
    data: Data | None = None
    sweep: Annotated[dict[str, Range], BeforeValidator(flatten_sweep)] = Field(
        default_factory=dict, description="`archc sweep`'s search space: \"params.NAME\" or \"train.KEY\" (dotted) = "
                                          "{ int = [lo, hi] } | { float = [lo, hi] } | { log_uniform = [lo, hi] } | "
                                          "{ choice = [...] }")
