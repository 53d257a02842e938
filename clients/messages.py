"""The named keys of fedsim's Flower messages, shared by the ServerApp and the ClientApp.

A train message carries the global model (``arrays``) and a :class:`ShareRequest` (the
logical clients a node trains, the contribution rule, the deadline); its reply carries
the share's summed update (and on audited rounds each prepared update) and each client's
report. An evaluate message names the clients whose held-out samples to score.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsim.clients.node import ClientReport, ShareRequest, ShareResult
from fedsim.strategies.aggregation import ContributionRule


def request_record(request: ShareRequest, *, share: int) -> ConfigRecord:
    """A share request as the train message's config."""
    rule = request.rule
    config: dict = {
        "round": request.round_number,
        "share": share,
        "client-ids": [int(c) for c in request.client_ids],
        "client-clips": rule.client_clips,
        "by-examples": rule.by_examples,
        "keep-updates": request.keep_updates,
    }
    if rule.clip_norm is not None:
        config["clip-norm"] = float(rule.clip_norm)
    if request.deadline is not None:
        config["deadline"] = float(request.deadline)
    return ConfigRecord(config)


def read_request(config: ConfigRecord) -> ShareRequest:
    """The share request of a train message's config."""
    rule = ContributionRule(
        clip_norm=float(config["clip-norm"]) if "clip-norm" in config else None,
        client_clips=bool(config["client-clips"]),
        by_examples=bool(config["by-examples"]),
    )
    return ShareRequest(
        round_number=int(config["round"]),
        client_ids=[int(c) for c in config["client-ids"]],
        rule=rule,
        keep_updates=bool(config["keep-updates"]),
        deadline=float(config["deadline"]) if "deadline" in config else None,
    )


def result_record(result: ShareResult, *, share: int, host: str | None) -> RecordDict:
    """A share's result as the train reply's content."""
    arrays = {"total": Array(result.total)}
    if result.updates is not None:
        arrays["updates"] = Array(result.updates)
    reports = result.reports
    config = {
        "share": share,
        "weight": float(result.weight),
        "client-id": [r.client_id for r in reports],
        "num-examples": [r.num_examples for r in reports],
        "update-norm": [float(r.update_norm) for r in reports],
        "train-loss": [float(r.train_loss) for r in reports],
        "noise-std": [math.nan if r.noise_std is None else float(r.noise_std) for r in reports],
        "failed-id": list(result.failed),
        "failed-why": list(result.failed.values()),
        "host": host or "",
    }
    return RecordDict({"arrays": ArrayRecord(array_dict=arrays), "share": ConfigRecord(config)})


def read_result(content: RecordDict) -> tuple[int, ShareResult, str]:
    """(share index, result, Ray node id or "") of a train reply's content."""
    config, arrays = content["share"], content["arrays"]
    reports = [
        ClientReport(int(cid), int(n), float(norm), float(loss), None if math.isnan(std) else float(std))
        for cid, n, norm, loss, std in zip(
            config["client-id"],
            config["num-examples"],
            config["update-norm"],
            config["train-loss"],
            config["noise-std"],
        )
    ]
    updates = np.asarray(arrays["updates"].numpy()) if "updates" in arrays else None
    result = ShareResult(
        total=np.asarray(arrays["total"].numpy()),
        weight=float(config["weight"]),
        reports=reports,
        failed={int(cid): str(why) for cid, why in zip(config["failed-id"], config["failed-why"])},
        updates=updates,
    )
    return int(config["share"]), result, str(config["host"])
