"""The honest clients as a Flower Message-API ClientApp.

A Flower supernode hosts many logical clients: each train message names one or more
shares of the round's cohort, whose clients the node trains one after the other with the
model and data already in its process (fedsim.clients.node), and answers with each
share's summed update (each client's update clipped on its own as the strategy asks) and
each client's report. Client-side clipping
(``dp.mode client_fixed``) uses the helper of Flower's ``fixedclipping_mod`` on each
logical client's weights inside the node: the mod itself clips one update per message.
Each evaluate message names a list of clients.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedsim.clients.messages import read_requests, results_content, scores_content
from fedsim.clients.node import node_host, train_shares
from fedsim.clients.work import runner_for
from fedsim.config import Scenario
from fedsim.threads import use_one_thread

use_one_thread()  # one Ray actor per CPU: no oversubscription


def make_client_app(*, scenario: Scenario) -> ClientApp:
    """A ClientApp that trains and evaluates the scenario's logical clients."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        state = msg.content["arrays"].to_torch_state_dict()
        results = train_shares(scenario=scenario, state=state, requests=read_requests(msg.content))
        return Message(results_content(results, host=node_host()), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        scores = runner_for(scenario).scores(
            state=msg.content["arrays"].to_torch_state_dict(),
            client_ids=[int(c) for c in msg.content["config"]["client-ids"]],
        )
        return Message(scores_content(scores), reply_to=msg)

    return app
