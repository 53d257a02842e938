"""The honest client as a Flower Message-API ClientApp.

A Flower supernode hosts logical clients: each train message names the logical client
(``client-id``) whose data to train on, and each evaluate message names a list of them.
So the population can be far larger than the number of supernodes (and later one call
can train many clients). Client-side clipping is Flower's ``fixedclipping_mod`` attached
to ``train`` only (on the whole app it would break evaluate replies).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from fedsim.clients.work import evaluate_many, train_sampled
from fedsim.config import Scenario
from fedsim.privacy import DpMechanism

torch.set_num_threads(1)  # one Ray actor per CPU: no oversubscription


def make_client_app(*, scenario: Scenario) -> ClientApp:
    """A ClientApp that trains and evaluates the scenario's logical clients."""
    app = ClientApp()
    mods = [fixedclipping_mod] if DpMechanism.from_scenario(scenario).client_clips else []

    @app.train(mods=mods)
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        trained = train_sampled(
            scenario=scenario,
            start=msg.content["arrays"].to_torch_state_dict(),
            client_id=int(config["client-id"]),
            round_number=int(config["round"]),
        )
        metrics = {
            "client-id": trained.client_id,
            "num-examples": trained.num_examples,
            "train-loss": trained.train_loss,
            "update-norm": trained.update_norm,  # before the mod's client-side clipping
        }
        if trained.noise_std is not None:
            metrics["noise-std"] = trained.noise_std
        return Message(
            RecordDict({"arrays": ArrayRecord(trained.state), "metrics": MetricRecord(metrics)}),
            reply_to=msg,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        loss_sum, correct, count = evaluate_many(
            scenario=scenario,
            state=msg.content["arrays"].to_torch_state_dict(),
            client_ids=[int(c) for c in msg.content["config"]["client-ids"]],
        )
        metrics = {"loss-sum": loss_sum, "correct": correct, "num-examples": count}
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
