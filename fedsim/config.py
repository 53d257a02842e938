"""The scenario: one typed, frozen, validated description of a simulated run.

A scenario comes from a YAML file plus ``--set key=value`` overrides and is validated
once. Every error names the key, the bad value and what is allowed, on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedsim.errors import ScenarioError

DpMode = Literal["none", "server_fixed", "client_fixed", "server_adaptive", "local_dpsgd"]
Sampling = Literal["poisson", "fixed"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Which federated data set, how many users, and how they are split."""

    name: str = "synthetic"
    root: str | None = None
    num_clients: int = Field(100, ge=1)
    design_pool: int = Field(20, ge=0, description="users reserved for the adversary")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)


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
    iterations: int = Field(100, ge=0, description="Adam steps of the crafting")
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


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Describe what is allowed at a location of the scenario tree."""
    fields = model.model_fields
    for i, part in enumerate(loc):
        if not isinstance(part, str) or part not in fields:
            keys = ", ".join(sorted(fields))
            return f"allowed keys here: {keys}"
        annotation = fields[part].annotation
        if i == len(loc) - 1:
            args = get_args(annotation)
            if args and all(isinstance(a, str) for a in args):
                return "allowed: " + ", ".join(args)
            if fields[part].description:
                return fields[part].description
            return ""
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
        else:
            return ""
    return ""


def _one_line(error: ValidationError) -> str:
    """Turn pydantic's first error into one line naming key, value and what is allowed."""
    first = error.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "scenario"
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed(Scenario, parent + ("\0",)) if parent else _allowed(Scenario, ("\0",))
        return f"unknown scenario key '{key}'; {allowed}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return f"invalid scenario: {message}"
    allowed = _allowed(Scenario, loc)
    suffix = f"; {allowed}" if allowed and allowed not in message else ""
    return f"scenario key '{key}': got {first.get('input')!r}: {message}{suffix}"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
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


def scenario_from_dict(tree: dict[str, Any], *, overrides: list[str] | None = None) -> Scenario:
    """Validate a scenario tree, after applying ``key=value`` overrides."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    for key, value in parse_overrides(overrides or []):
        _set_path(tree, key, value)
    try:
        scenario = Scenario.model_validate(tree)
    except ValidationError as error:
        raise ScenarioError(_one_line(error)) from None
    return scenario


def load_scenario(path: str | Path, *, overrides: list[str] | None = None) -> Scenario:
    """Read a YAML scenario file and validate it with its overrides."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"scenario file {str(path)!r} not found; pass a path such as scenarios/quickstart.yaml")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"cannot read scenario file {str(path)!r} ({error}); pass a UTF-8 YAML file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"scenario file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(tree, dict):
        raise ScenarioError(f"scenario file {str(path)!r} must hold a mapping of keys (name:, rounds:, data:, ...)")
    return scenario_from_dict(tree, overrides=overrides)


def scenario_to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML (what the run store keeps)."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
