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

from fedsim.clients.training import evaluate_client, train_client
from fedsim.config import Scenario
from fedsim.experiment import dataset_for, model_for, train_settings
from fedsim.params import flatten_state
from fedsim.seeding import client_seed

torch.set_num_threads(1)  # one Ray actor per CPU: no oversubscription


def make_client_app(*, scenario: Scenario) -> ClientApp:
    """A ClientApp that trains and evaluates the scenario's logical clients."""
    app = ClientApp()
    mods = [fixedclipping_mod] if scenario.dp.mode == "client_fixed" else []

    @app.train(mods=mods)
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        client_id, round_number = int(config["client-id"]), int(config["round"])
        dataset = dataset_for(scenario)
        model = model_for(scenario, dataset)
        start = msg.content["arrays"].to_torch_state_dict()
        model.load_state_dict(start)
        data = dataset.client(client_id)
        result = train_client(
            model=model,
            data=data,
            settings=train_settings(scenario),
            seed=client_seed(seed=scenario.seed, round_number=round_number, client_id=client_id),
        )
        trained = model.state_dict()
        norm = float(((flatten_state(trained) - flatten_state(start)) ** 2).sum() ** 0.5)
        metrics = {
            "client-id": client_id,
            # DP-FedAvg averages clients with equal weight; plain FedAvg by example count
            "num-examples": result.num_examples,
            "train-loss": result.mean_loss,
            "update-norm": norm,  # before any client-side clipping by the mod
        }
        return Message(
            RecordDict({"arrays": ArrayRecord(trained), "metrics": MetricRecord(metrics)}),
            reply_to=msg,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        dataset = dataset_for(scenario)
        model = model_for(scenario, dataset)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        loss_sum, correct, count = 0.0, 0, 0
        for client_id in config["client-ids"]:
            client_loss, client_correct, client_count = evaluate_client(model=model, data=dataset.client(int(client_id)))
            loss_sum, correct, count = loss_sum + client_loss, correct + client_correct, count + client_count
        metrics = {"loss-sum": loss_sum, "correct": correct, "num-examples": count}
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
