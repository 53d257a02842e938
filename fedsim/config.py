"""The scenario: one typed, frozen, validated description of a simulated run.

A scenario comes from a YAML file plus ``--set key=value`` overrides and is validated
once. Every error names the key, the bad value and what is allowed, on one line.
``Scenario.model_validate`` checks the values alone (types, ranges, unknown keys, the data
set's options, impossible combinations); ``load_scenario`` and ``scenario_from_dict``
also check what running it needs (the data folder exists, the model exists and can read
the data), before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fedsim.data.options import (
    DATA_OPTIONS,
    describe_option_error,
    options_model,
    refuse_bool_for_number,
    root_required,
)
from fedsim.errors import ScenarioError, did_you_mean

DpMode = Literal["none", "server_fixed", "client_fixed", "server_adaptive", "local_dpsgd"]
Sampling = Literal["poisson", "fixed"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _no_bools = field_validator("*", mode="before")(refuse_bool_for_number)


class DataConfig(_Section):
    """Which federated data set, how many users, and how they are split."""

    name: str = "synthetic"
    root: str | None = None
    num_clients: int = Field(100, ge=1)
    design_pool: int = Field(20, ge=0, description="users reserved for the adversary")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        options_model(name)  # a ValueError naming the allowed data sets
        return name

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name not in DATA_OPTIONS:
            return options  # the unknown name is the error reported
        # a ValidationError here is reported at data.options.<key>
        return DATA_OPTIONS[name].model_validate(options).model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _root_if_needed(self) -> DataConfig:
        if self.root is None and DATA_OPTIONS[self.name].needs_root:
            raise ValueError(root_required(self.name))
        return self


class ModelConfig(_Section):
    """Which model of the zoo, and its size."""

    name: str = "logreg"
    hidden: int = Field(64, ge=1)


class ClientConfig(_Section):
    """Local training on each sampled client."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(10, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)


class ServerConfig(_Section):
    """How the server applies the (noisy) average update to the global model."""

    optimizer: Literal["fedavg", "fedadam"] = "fedavg"
    lr: float = Field(1.0, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


class AdaptiveConfig(_Section):
    """Adaptive clipping (Andrew et al. 2021): the clip norm tracks a quantile."""

    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_lr: float = Field(0.2, gt=0)
    count_noise_multiplier: float | None = Field(
        None, gt=0, description="noise on the clipped count; default cohort/20"
    )


class DpConfig(_Section):
    """Differential privacy of the aggregation (or of local training)."""

    mode: DpMode = "server_fixed"
    noise_multiplier: float = Field(1.0, ge=0)
    clip_norm: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    adaptive: AdaptiveConfig = AdaptiveConfig()


class EvaluationConfig(_Section):
    """Federated evaluation on the clients' held-out samples."""

    every: int = Field(1, ge=1, description="evaluate every k-th round and the last")
    clients: int | None = Field(None, ge=1, description="clients evaluated; all if unset")


class AuditConfig(_Section):
    """The CANIFE canary audit: an empirical per-round epsilon next to the theory."""

    enabled: bool = False
    every: int = Field(1, ge=1, description="audit every k-th round (and round 1)")
    canary: Literal["sample", "update"] = "sample"
    design_pool: int | None = Field(
        None, ge=1, description="mock clients from the design-pool users; default min(20, data.design_pool)"
    )
    design_batch: int = Field(16, ge=1, description="design updates per crafting step")
    iterations: int = Field(100, ge=0, description="Adam steps of the crafting (at most)")
    min_improvement: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="a sample canary's crafting stops once two checks in a row (10 steps apart) each raised "
        "its health by less than this; 0 takes every step",
    )
    lr: float = Field(0.05, gt=0, description="Adam learning rate of the crafting")
    norm_constant: float | None = Field(None, gt=0, description="C_norm; default clip_norm / client.lr")
    tests: int = Field(50_000, ge=10, description="with/without aggregates per attacked round")
    confidence: float = Field(0.95, gt=0, lt=1)
    estimators: list[Literal["gaussian", "threshold"]] = Field(
        default_factory=lambda: ["gaussian", "threshold"], min_length=1
    )
    noise_multipliers: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=list,
        description="what-if noise multipliers: each audited round is also replayed with each of these",
    )


class RayConfig(_Section):
    """Ray resources for the simulation."""

    num_cpus_per_client: float = Field(1.0, gt=0)
    num_gpus_per_client: float = Field(0.0, ge=0)
    num_nodes: int = Field(32, ge=1, description="Flower supernodes that host clients")
    address: str | None = Field(None, description="attach to this Ray cluster")
    timeout_s: float = Field(60.0, gt=0, description="give up attaching after this")


class FaultsConfig(_Section):
    """Clients that fail or hang on purpose (tests, and studies of dropouts)."""

    fail_clients: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="client ids that raise when they train"
    )
    hang_clients: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="client ids that stop answering when they train"
    )
    rounds: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="rounds in which the listed clients fail or hang; every round if unset"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="probability that a sampled client fails (seeded)")
    hang_s: float = Field(3600.0, gt=0, description="how long a hanging client sleeps")


class CheckpointConfig(_Section):
    """Checkpoints that ``fedsim resume`` continues from."""

    every: int = Field(1, ge=1, description="write a checkpoint every k-th round (and the last)")


class Scenario(_Section):
    """A whole simulated run."""

    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$", description="letters, digits, '_', '.', '-'")
    seed: int = Field(0, ge=0, lt=2**63)
    rounds: int = Field(10, ge=1)
    clients_per_round: int = Field(10, ge=1)
    sampling: Sampling = "poisson"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    dp: DpConfig = DpConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    audit: AuditConfig = AuditConfig()
    ray: RayConfig = RayConfig()
    min_replies: float = Field(
        0.5, ge=0, le=1, description="share of a round's sampled clients that must answer, or the run fails"
    )
    round_timeout_s: float | None = Field(
        None, gt=0, description="seconds a round waits for its clients; the late ones count as failed"
    )
    faults: FaultsConfig = FaultsConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="where clients train: cpu, or cuda (with ray.num_gpus_per_client, a GPU share per client)"
    )

    @model_validator(mode="after")
    def _check_devices(self) -> Scenario:
        gpus = self.ray.num_gpus_per_client
        if self.device == "cuda" and gpus == 0:
            raise ValueError(
                "device cuda needs ray.num_gpus_per_client > 0 (Ray hides GPUs from clients that reserve none), "
                "e.g. 0.25 for four clients per GPU"
            )
        if self.device == "cpu" and gpus > 0:
            raise ValueError(
                f"ray.num_gpus_per_client {gpus:g} reserves GPUs for clients that train on the CPU; "
                "set device: cuda, or ray.num_gpus_per_client: 0"
            )
        return self

    @model_validator(mode="after")
    def _check_cohort(self) -> Scenario:
        if self.clients_per_round > self.data.num_clients:
            raise ValueError(
                f"clients_per_round ({self.clients_per_round}) exceeds data.num_clients "
                f"({self.data.num_clients}); lower clients_per_round or add clients"
            )
        from fedsim.privacy.mechanism import DpMechanism  # the mechanism reads this module's types

        mechanism = DpMechanism.from_scenario(self)
        if mechanism.local and self.dp.noise_multiplier == 0:
            raise ValueError("dp.noise_multiplier must be > 0 for local_dpsgd (Opacus)")
        if self.audit.enabled:
            if mechanism.local:
                raise ValueError("audit.enabled audits user-level central DP; it cannot audit dp.mode local_dpsgd")
            if self.audit.noise_multipliers and not mechanism.central:
                raise ValueError(
                    f"audit.noise_multipliers replays a central DP release; dp.mode {self.dp.mode} has none "
                    "(use server_fixed, client_fixed or server_adaptive, or drop audit.noise_multipliers)"
                )
            if self.data.design_pool == 0:
                raise ValueError(
                    "audit.enabled needs design-pool users the adversary may use; set data.design_pool (e.g. 20)"
                )
            if self.audit.design_pool is not None and self.audit.design_pool > self.data.design_pool:
                raise ValueError(
                    f"audit.design_pool ({self.audit.design_pool}) exceeds data.design_pool "
                    f"({self.data.design_pool}); reserve more design-pool users or lower audit.design_pool"
                )
        return self

    @property
    def sampling_rate(self) -> float:
        """q = clients_per_round / population."""
        return self.clients_per_round / self.data.num_clients


def _section(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section (model) at a location of the scenario tree, or None if it is a value."""
    model: type[BaseModel] = Scenario
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _detail(model: type[BaseModel], key: str) -> str:
    """What a field allows: its choices, or its description."""
    field = model.model_fields.get(key)
    if field is None:
        return ""
    choices = get_args(field.annotation)
    if choices and all(isinstance(choice, str) for choice in choices):
        return "allowed: " + ", ".join(choices)
    return field.description or ""


def _one_line(error: ValidationError, tree: dict[str, Any]) -> str:
    """Turn pydantic's first error into one line naming key, value and what is allowed."""
    first = error.errors()[0]
    loc = tuple(first["loc"])
    if (loc[:2] == ("data", "options") and len(loc) > 2) or (
        first["type"] == "value_error" and loc == ("data", "options")
    ):
        data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
        name = data.get("name", DataConfig.model_fields["name"].default)
        return describe_option_error(name, {**first, "loc": loc[2:]})
    key = ".".join(str(p) for p in loc) or "scenario"
    parent = _section(loc[:-1])
    if first["type"] == "extra_forbidden" and parent is not None:
        prefix = ".".join(str(p) for p in loc[:-1])
        hint = did_you_mean(str(loc[-1]), parent.model_fields, prefix=f"{prefix}." if prefix else "")
        return f"unknown scenario key '{key}';{hint} allowed keys here: {', '.join(sorted(parent.model_fields))}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and _section(loc) is not None:
        return f"invalid scenario: {message}"  # a check across keys: its message names them
    detail = _detail(parent, str(loc[-1])) if parent is not None and loc and first["type"] != "literal_error" else ""
    suffix = f"; {detail}" if detail and detail not in message else ""
    return f"scenario key '{key}': got {first.get('input')!r}: {message}{suffix}"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(part.strip() for part in parts):
        raise ScenarioError(
            f"--set {dotted}=...: the key has an empty part; write dotted keys such as dp.noise_multiplier"
        )
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"--set {dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML scalars (1e-5, true, null)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"--set expects key=value (e.g. dp.noise_multiplier=0.5), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def check_runnable(scenario: Scenario) -> None:
    """What running the scenario needs beyond valid values: its model and its data folder.

    Raises:
        ScenarioError: One line naming the key: ``device: cuda`` without a CUDA GPU, an
            unknown ``model.name``, a model that cannot read the data set's inputs, or a
            ``data.root`` that does not exist.
    """
    from fedsim.models import MODELS, TEXT_MODELS  # imports torch: kept out of the value checks

    model, data = scenario.model.name, scenario.data
    if scenario.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ScenarioError(
                f"scenario key 'device': got 'cuda', but torch {torch.__version__} finds no CUDA GPU on this machine; "
                "use device: cpu (and ray.num_gpus_per_client: 0), or run where a GPU and a CUDA build of torch are"
            )
    if data.root is not None and DATA_OPTIONS[data.name].needs_root and not Path(data.root).is_dir():
        how = DATA_OPTIONS[data.name].get_files.replace("DIR", data.root)
        raise ScenarioError(f"scenario key 'data.root': folder {data.root!r} does not exist; {how}")
    if model not in MODELS:
        raise ScenarioError(
            f"scenario key 'model.name': got {model!r}: unknown model;{did_you_mean(model, MODELS, prefix='')} "
            f"allowed: {', '.join(MODELS)}"
        )
    inputs = DATA_OPTIONS[data.name].inputs
    text = ", ".join(TEXT_MODELS)
    if model in TEXT_MODELS and inputs != "tokens":
        raise ScenarioError(
            f"scenario key 'model.name': {model} reads token ids, but data set {data.name} gives {inputs}; "
            f"use a model other than {text}, or data.name sent140 or shakespeare"
        )
    if model not in TEXT_MODELS and inputs == "tokens":
        raise ScenarioError(
            f"scenario key 'model.name': {model} cannot read the token ids of data set {data.name}; use one of: {text}"
        )


def scenario_from_dict(tree: dict[str, Any], *, overrides: list[str] | None = None) -> Scenario:
    """Validate a scenario tree, after applying ``key=value`` overrides, and check that it can run."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for key, value in parse_overrides(overrides or []):
        _set_path(tree, key, value)
    try:
        scenario = Scenario.model_validate(tree)
    except ValidationError as error:
        raise ScenarioError(_one_line(error, tree)) from None
    check_runnable(scenario)
    return scenario


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults": later keys override merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_scenario(path: str | Path, *, overrides: list[str] | None = None) -> Scenario:
    """Read a YAML scenario file (safely: plain data only) and validate it with its overrides."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ScenarioError(f"scenario file {str(path)!r} {what}; pass a path such as scenarios/quickstart.yaml")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"cannot read scenario file {str(path)!r} ({error}); pass a UTF-8 YAML file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None)
        why = f" ({' '.join(str(problem).split())})" if problem else ""
        raise ScenarioError(f"scenario file {str(path)!r} is not valid YAML{where}{why}; fix the syntax") from None
    if tree is None or tree == {}:
        raise ScenarioError(
            f"scenario file {str(path)!r} is empty; write the scenario's keys (start from scenarios/quickstart.yaml)"
        )
    if not isinstance(tree, dict):
        raise ScenarioError(f"scenario file {str(path)!r} must hold a mapping of keys (name:, rounds:, data:, ...)")
    return scenario_from_dict(tree, overrides=overrides)


def scenario_to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML (what the run store keeps)."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
