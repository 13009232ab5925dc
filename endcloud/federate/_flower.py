"""The one place `endcloud.federate` imports Flower (`flwr`), with its telemetry off.

Flower reports anonymous usage events to telemetry.flower.ai from every server and client
start unless `FLWR_TELEMETRY_ENABLED=0`. A shop's promise is that nothing but adapter tensors
leaves it, so this module turns that off before Flower is imported (it reads the variable at
import time) and again on the imported module, should something have imported Flower first.
Set `FLWR_TELEMETRY_ENABLED=1` yourself to opt in.

Flower 1.42 is installed without its own dependency resolution (`pip install --no-deps`; see
pyproject.toml's `federate` extra): its metadata caps typer, rich, fastapi and uvicorn below the
versions this project pins, for its CLI and SuperLink web parts, while the library parts used
here (strategies, the gRPC transport, the client) run with ours.
"""

from __future__ import annotations

import logging
import os

from endcloud.errors import ConfigError

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

try:
    import flwr  # noqa: F401
    from flwr.common import (Code, EvaluateIns, EvaluateRes, FitIns, FitRes, GetParametersIns, Parameters, Status,
                             ndarrays_to_parameters, parameters_to_ndarrays)
    from flwr.client import NumPyClient
    from flwr.server import Server, ServerAppComponents, ServerConfig, SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg, Strategy
    from flwr.server.strategy.aggregate import aggregate, aggregate_median, aggregate_trimmed_avg
    from flwr.server.strategy.dp_fixed_clipping import DifferentialPrivacyClientSideFixedClipping
    from flwr.supercore import telemetry as _telemetry
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update
except ImportError as e:  # pragma: no cover - exercised only where flwr is absent
    raise ConfigError(
        "federated training needs Flower: pip install --no-deps -r requirements-federate.txt "
        f"(or see docs/scale.md); import failed: {e}"
    ) from e

if os.environ.get("FLWR_TELEMETRY_ENABLED") == "0":
    _telemetry.FLWR_TELEMETRY_ENABLED = "0"

FLOWER_VERSION = flwr.__version__


def telemetry_enabled() -> bool:
    """Whether Flower would report usage events (off unless the user opted in)."""
    return _telemetry.FLWR_TELEMETRY_ENABLED == "1"


def quiet(level: int = logging.WARNING) -> None:
    """Flower logs every message it routes at INFO; keep its logger at `level`."""
    logging.getLogger("flwr").setLevel(level)


def apps():
    """Flower's (ServerApp, ClientApp) classes, for a SuperLink/SuperNode deployment."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    return ServerApp, ClientApp


def grpc_server(client_manager, address: str, *, max_message_length: int):
    """Flower's gRPC Fleet server (bidirectional streams) on `address`, started; `.bound_address`."""
    from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

    return start_grpc_server(client_manager=client_manager, server_address=address,
                             max_message_length=max_message_length)


def run_client(address: str, client, *, max_message_length: int, max_retries: int | None,
               max_wait_time: float | None, root_certificates: bytes | None = None) -> None:
    """Connect a Flower client to a server and serve its instructions until told to leave.

    This is Flower's gRPC-bidi client (`start_client`, deprecated in favour of `flower-supernode`
    but supported in 1.42): it talks to the server of `grpc_server` in-process or across
    machines with no SuperLink database, which is what `federate server/client/simulate` need.
    """
    from flwr.compat.client.app import start_client

    start_client(server_address=address, client=client.to_client(), grpc_max_message_length=max_message_length,
                 insecure=root_certificates is None, root_certificates=root_certificates,
                 max_retries=max_retries, max_wait_time=max_wait_time)


__all__ = [
    "Code", "ClientProxy", "DifferentialPrivacyClientSideFixedClipping", "EvaluateIns", "EvaluateRes", "FLOWER_VERSION",
    "FedAvg", "FitIns", "FitRes", "GetParametersIns", "KEY_CLIPPING_NORM", "NumPyClient", "Parameters", "Server",
    "ServerAppComponents", "ServerConfig", "SimpleClientManager", "Status", "Strategy", "aggregate", "aggregate_median",
    "aggregate_trimmed_avg", "apps", "compute_clip_model_update", "grpc_server", "ndarrays_to_parameters",
    "parameters_to_ndarrays", "quiet", "run_client", "telemetry_enabled",
]
