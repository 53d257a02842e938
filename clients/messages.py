"""The named keys of fedsim's Flower messages, shared by the ServerApp and the ClientApp.

A train message carries the global model (``arrays``) and one or more
:class:`ShareRequest` (``share-K``: the logical clients of share K, the contribution
rule, the deadline); its reply carries, per share, the summed update (``total-K``, and on
audited rounds each prepared update) and each client's report (``report-K``). An
evaluate message names the clients whose held-out samples to score; its reply lists
each client's loss sum, correct predictions and count.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsim.clients.node import ClientReport, ShareRequest, ShareResult
from fedsim.strategies.aggregation import ContributionRule


def request_content(*, arrays: ArrayRecord, requests: dict[int, ShareRequest]) -> RecordDict:
    """A train message's content: the global model and the shares it asks for."""
    content: dict = {"arrays": arrays}
    for share, request in requests.items():
        rule = request.rule
        config: dict = {
            "round": request.round_number,
            "client-ids": [int(c) for c in request.client_ids],
            "client-clips": rule.client_clips,
            "by-examples": rule.by_examples,
            "keep-updates": request.keep_updates,
            "sampled": request.sampled,
        }
        if rule.clip_norm is not None:
            config["clip-norm"] = float(rule.clip_norm)
        if request.deadline is not None:
            config["deadline"] = float(request.deadline)
        content[f"share-{share}"] = ConfigRecord(config)
    return RecordDict(content)


def read_requests(content: RecordDict) -> dict[int, ShareRequest]:
    """The share requests of a train message's content, by share index."""
    requests = {}
    for key, config in content.config_records.items():
        if not key.startswith("share-"):
            continue
        rule = ContributionRule(
            clip_norm=float(config["clip-norm"]) if "clip-norm" in config else None,
            client_clips=bool(config["client-clips"]),
            by_examples=bool(config["by-examples"]),
        )
        requests[int(key.removeprefix("share-"))] = ShareRequest(
            round_number=int(config["round"]),
            client_ids=[int(c) for c in config["client-ids"]],
            rule=rule,
            keep_updates=bool(config["keep-updates"]),
            deadline=float(config["deadline"]) if "deadline" in config else None,
            sampled=bool(config["sampled"]),
        )
    return requests


def results_content(results: dict[int, ShareResult], *, host: str | None) -> RecordDict:
    """A train reply's content: each share's result, and the Ray node that computed them."""
    content: dict = {"host": ConfigRecord({"host": host or ""})}
    for share, result in results.items():
        arrays = {"total": Array(result.total)}
        if result.updates is not None:
            arrays["updates"] = Array(result.updates)
        reports = result.reports
        content[f"total-{share}"] = ArrayRecord(array_dict=arrays)
        content[f"report-{share}"] = ConfigRecord(
            {
                "weight": float(result.weight),
                "client-id": [r.client_id for r in reports],
                "num-examples": [r.num_examples for r in reports],
                "update-norm": [float(r.update_norm) for r in reports],
                "train-loss": [float(r.train_loss) for r in reports],
                "noise-std": [math.nan if r.noise_std is None else float(r.noise_std) for r in reports],
                "failed-id": list(result.failed),
                "failed-why": list(result.failed.values()),
            }
        )
    return RecordDict(content)


def read_results(content: RecordDict) -> tuple[dict[int, ShareResult], str]:
    """(share index -> result, Ray node id or "") of a train reply's content."""
    results = {}
    for key, config in content.config_records.items():
        if not key.startswith("report-"):
            continue
        share = int(key.removeprefix("report-"))
        arrays = content.array_records[f"total-{share}"]
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
        results[share] = ShareResult(
            total=np.asarray(arrays["total"].numpy()),
            weight=float(config["weight"]),
            reports=reports,
            failed={int(cid): str(why) for cid, why in zip(config["failed-id"], config["failed-why"])},
            updates=np.asarray(arrays["updates"].numpy()) if "updates" in arrays else None,
        )
    return results, str(content.config_records["host"]["host"])


def scores_content(scores: list[tuple[float, int, int]]) -> RecordDict:
    """An evaluate reply's content: each client's (loss sum, correct, count), in order."""
    return RecordDict(
        {
            "scores": ConfigRecord(
                {
                    "loss-sum": [float(s[0]) for s in scores],
                    "correct": [int(s[1]) for s in scores],
                    "num-examples": [int(s[2]) for s in scores],
                }
            )
        }
    )


def read_scores(content: RecordDict) -> list[tuple[float, int, int]]:
    """The per-client scores of an evaluate reply, in the order they were asked for."""
    config = content.config_records["scores"]
    return [
        (float(a), int(b), int(c)) for a, b, c in zip(config["loss-sum"], config["correct"], config["num-examples"])
    ]
