"""The honest clients as a Flower Message-API ClientApp.

A Flower supernode hosts many logical clients: each train message names a share of the
round's cohort, which the node trains one client after the other with the model and data
already in its process (fedsim.clients.node), and answers with their summed update (each
clipped on its own as the strategy asks) and each client's report. Client-side clipping
(``dp.mode client_fixed``) uses the helper of Flower's ``fixedclipping_mod`` on each
logical client's weights inside the node: the mod itself clips one update per message.
Each evaluate message names a list of clients.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.clients.messages import read_request, result_record
from fedsim.clients.node import node_host, train_share
from fedsim.clients.work import evaluate_many
from fedsim.config import Scenario
from fedsim.threads import use_one_thread

use_one_thread()  # one Ray actor per CPU: no oversubscription


def make_client_app(*, scenario: Scenario) -> ClientApp:
    """A ClientApp that trains and evaluates the scenario's logical clients."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        result = train_share(
            scenario=scenario, state=msg.content["arrays"].to_torch_state_dict(), request=read_request(config)
        )
        return Message(result_record(result, share=int(config["share"]), host=node_host()), reply_to=msg)

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
