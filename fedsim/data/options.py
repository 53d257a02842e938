"""What each data set accepts under ``data.options``, declared once per data set.

One pydantic model per data set: the option names, their types, ranges and defaults.
The scenario checks them when it is loaded (before any run folder exists), and a data
set checks them again when it is built directly. This module imports neither torch nor
a loader, so checking a scenario stays light.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fedsim.data.text import DEFAULT_MAX_WORDS
from fedsim.errors import DataError, did_you_mean

InputKind = Literal["features", "images", "tokens"]

#: data-set arguments that the scenario sets itself, never through ``data.options``
SET_BY_SCENARIO = {
    "seed": "seed",
    "num_clients": "data.num_clients",
    "design_pool": "data.design_pool",
    "design_pool_size": "data.design_pool",
    "test_fraction": "data.test_fraction",
    "root": "data.root",
}


def _is_number(annotation: Any) -> bool:
    union = get_origin(annotation) in (Union, types.UnionType)
    kinds = get_args(annotation) if union else (annotation,)
    return bool not in kinds and any(kind in (int, float) for kind in kinds)


def refuse_bool_for_number(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A ``before`` field validator: ``true``/``false`` where a number belongs is a mistake.

    (Pydantic would otherwise read ``rounds: yes`` as 1.)
    """
    field = cls.model_fields.get(info.field_name or "")
    if isinstance(value, bool) and field is not None and _is_number(field.annotation):
        raise PydanticCustomError("bool_for_number", "Input should be a number, not true/false")
    return value


class DataOptions(BaseModel):
    """Options shared by every data set (none) and how a data set is described."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: what one input is: a feature vector, an image (C, H, W) or token ids
    inputs: ClassVar[InputKind] = "features"
    #: whether the data set reads files under ``data.root``
    needs_root: ClassVar[bool] = False
    #: how to get its files into ``data.root`` (for messages)
    get_files: ClassVar[str] = ""

    _no_bools = field_validator("*", mode="before")(refuse_bool_for_number)


class SyntheticOptions(DataOptions):
    """FedProx's synthetic(alpha, beta) users (``fedsim.data.synthetic``)."""

    alpha: float = Field(1.0, ge=0, description="spread of the users' models, >= 0")
    beta: float = Field(1.0, ge=0, description="spread of the users' inputs, >= 0")
    iid: bool = Field(False, description="synthetic_iid: one shared model, alpha and beta unused")
    dim: int = Field(60, ge=1, description="input dimension")
    num_classes: int = Field(10, ge=2, description="number of classes, >= 2")
    mean_log_samples: float = Field(4.0, description="mean of the log of a user's extra samples")
    sigma_log_samples: float = Field(1.0, ge=0, description="std of that log, >= 0 (0: equal sizes)")
    min_samples: int = Field(10, ge=1, description="samples every user has at least")
    max_samples: int = Field(1000, ge=1, description="cap on a user's samples, >= min_samples")

    @model_validator(mode="after")
    def _sizes(self) -> SyntheticOptions:
        if self.max_samples < self.min_samples:
            raise ValueError(
                f"data.options.max_samples ({self.max_samples}) must be >= data.options.min_samples "
                f"({self.min_samples}); raise max_samples or lower min_samples"
            )
        return self


class PartitionOptions(DataOptions):
    """A pool of labelled images split among users."""

    inputs: ClassVar[InputKind] = "images"

    partition: Literal["dirichlet", "iid"] = Field("dirichlet", description="how images are split among users")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration, > 0 (smaller: more label skew)")


class DigitsOptions(PartitionOptions):
    """scikit-learn's 8x8 digits (``fedsim.data.digits``)."""


class Cifar10Options(PartitionOptions):
    """CIFAR-10 (``fedsim.data.cifar10``)."""

    needs_root: ClassVar[bool] = True
    get_files: ClassVar[str] = "run `fedsim data prepare cifar10 --root DIR` (the official python tarball)"

    max_samples: int | None = Field(None, ge=1, description="cap on a user's images (a seeded subset); null keeps all")


class NaturalUsersOptions(DataOptions):
    """Users as the data defines them (``fedsim.data.store.NaturalUsersDataset``)."""

    needs_root: ClassVar[bool] = True

    min_samples: int = Field(1, ge=1, description="keep users with at least this many samples")
    user_fraction: float = Field(1.0, gt=0, le=1, description="keep this random fraction of them, in (0, 1]")
    max_samples: int | None = Field(None, ge=1, description="cap on a user's samples; null keeps all")


class Sent140Options(NaturalUsersOptions):
    """Sentiment140 by Twitter user (``fedsim.data.sent140``)."""

    inputs: ClassVar[InputKind] = "tokens"
    get_files: ClassVar[str] = "run `fedsim data prepare sent140 --root DIR`"

    max_words: int = Field(DEFAULT_MAX_WORDS, ge=1, description="vocabulary size without <pad>/<unk>")
    source: Literal["auto", "csv", "leaf"] = "auto"
    csv_file: str | None = Field(None, description="name of the CSV inside data.root")


class ShakespeareOptions(NaturalUsersOptions):
    """Shakespeare next-character prediction by (play, role) (``fedsim.data.shakespeare``)."""

    inputs: ClassVar[InputKind] = "tokens"
    get_files: ClassVar[str] = "run `fedsim data prepare shakespeare --root DIR`"

    source: Literal["auto", "leaf", "gutenberg", "speeches"] = "auto"


class CelebaOptions(NaturalUsersOptions):
    """CelebA by celebrity (``fedsim.data.celeba``)."""

    inputs: ClassVar[InputKind] = "images"
    get_files: ClassVar[str] = (
        "place img_align_celeba/, identity_CelebA.txt and list_attr_celeba.txt in DIR by hand (CelebA's terms)"
    )

    image_size: int = Field(84, ge=8, description="side of the resized square image, >= 8")
    source: Literal["auto", "raw", "leaf"] = "auto"


#: data-set name -> its options (the registry of names the scenario accepts)
DATA_OPTIONS: dict[str, type[DataOptions]] = {
    "synthetic": SyntheticOptions,
    "digits": DigitsOptions,
    "sent140": Sent140Options,
    "shakespeare": ShakespeareOptions,
    "celeba": CelebaOptions,
    "cifar10": Cifar10Options,
}


def options_model(name: str) -> type[DataOptions]:
    """The options model of a registered data set.

    Raises:
        ValueError: If the name is unknown (a one-line message with the allowed names).
    """
    if name not in DATA_OPTIONS:
        raise ValueError(
            f"unknown data set {name!r};{did_you_mean(name, DATA_OPTIONS)} allowed: {', '.join(DATA_OPTIONS)}"
        )
    return DATA_OPTIONS[name]


def describe_option_error(name: str, error: Mapping[str, Any]) -> str:
    """One line for one pydantic error of data set ``name``'s options (loc relative to them)."""
    model = DATA_OPTIONS[name]
    loc = tuple(str(part) for part in error["loc"])
    key = "data.options" + "".join(f".{part}" for part in loc)
    allowed = ", ".join(model.model_fields) or "(none)"
    if error["type"] == "extra_forbidden":
        if loc and loc[0] in SET_BY_SCENARIO:
            return f"scenario key '{key}': {name} takes it from the scenario key '{SET_BY_SCENARIO[loc[0]]}', not from data.options"
        hint = did_you_mean(loc[-1], model.model_fields, prefix="data.options.")
        return f"unknown scenario key '{key}';{hint} allowed options of data set {name}: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:
        return f"data set {name}: {message}"
    field = model.model_fields.get(loc[0])
    choices = get_args(field.annotation) if field is not None else ()
    if error["type"] == "literal_error":
        detail = ""  # pydantic's message lists the choices
    elif choices and all(isinstance(choice, str) for choice in choices):
        detail = "allowed: " + ", ".join(choices)
    else:
        detail = (field.description or "") if field is not None else ""
    suffix = f"; {detail}" if detail and detail not in message else ""
    return f"scenario key '{key}': got {error.get('input')!r}: {message}{suffix}"


def parse_options(name: str, options: Mapping[str, Any]) -> DataOptions:
    """Validate ``data.options`` of data set ``name``.

    Raises:
        DataError: One line naming ``data.options.<key>``, the bad value and what is allowed.
    """
    try:
        model = options_model(name)
    except ValueError as error:
        raise DataError(str(error)) from None
    try:
        return model.model_validate(dict(options))
    except ValidationError as error:
        raise DataError(describe_option_error(name, error.errors()[0])) from None


def root_required(name: str) -> str:
    """The one-line message for a data set that needs ``data.root`` but got none."""
    return f"data set {name} needs data.root, the folder with its files: {DATA_OPTIONS[name].get_files}, then pass --set data.root=DIR"
