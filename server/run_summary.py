"""What a finished run leaves: the final model, the audit, the plots and ``summary.json``."""

from __future__ import annotations

import json
from logging import INFO
from typing import Any

from flwr.common import log

from federated.config import RunConfig, run_config_to_flat
from federated.protocol.global_model import GlobalModel
from federated.results import METRICS_FILE, SUMMARY_FILE, RunResults
from server.audit import run_audit
from server.loss_plot import plot_losses
from server.round_outcomes import run_counts
from server.run import Run
from server.run_clock import RunClock
from server.server_model import ServerModel, model_files
from simulation.clock_plots import plot_round_timeline, plot_test_against_hours
from simulation.driver import clock_summary

LOSS_PLOT, TIME_PLOT, TIMELINE_PLOT = "loss.png", "simulated_time.png", "round_timeline.png"
AUDIT_FILE = "audit.json"


def finish_run(run: Run, final: GlobalModel) -> None:
    """Save ``final``, audit it if asked, plot the run and write its summary."""
    config, results = run.config, run.results
    run.server_model.save(final, results.folder)
    audit = _audit(config, run.server_model, final, results)
    title = f"{config.model.name} on {config.data.name}, {config.strategy.name}"
    plot_losses(results.rounds(), results.folder / LOSS_PLOT, title)
    if run.devices is not None:
        _plot_clock(results, config, title)
    summary = _summary(config, results, run.clock)
    if audit is not None:
        summary["audit"] = audit
    zo = run.server_model.zo
    if zo is not None and zo.frozen_bytes_saved:
        summary["zo_frozen_bytes_saved"] = zo.frozen_bytes_saved
    if run.devices is not None:
        summary["devices"] = run.devices.profiles()
    results.write_summary(summary)
    plots = (LOSS_PLOT, TIME_PLOT, TIMELINE_PLOT)  # those drawn exist
    names = (*model_files(config), *plots, AUDIT_FILE, METRICS_FILE, SUMMARY_FILE)
    run.tracking.finish(results.folder / name for name in names)
    log(INFO, "fedtune: done. %s", json.dumps(summary["final_test"]))
    log(INFO, "fedtune: results, metrics.jsonl, summary.json, loss.png in %s", results.folder)


def _mean_per_client(rounds: list[dict], key: str) -> float | None:
    """Bytes one client sends or receives in a round, on average over clients and rounds."""
    values = [client[key] for r in rounds for client in r["clients"]]
    return sum(values) / len(values) if values else None


def _summary(config: RunConfig, results: RunResults, clock: RunClock) -> dict[str, Any]:
    rounds = results.rounds()
    trained = [r for r in rounds if r["round"] > 0]
    summary = {
        "run_name": results.folder.name,
        "config": run_config_to_flat(config),
        "rounds": len(trained),
        "initial_test": {k: v for k, v in rounds[0].items() if k.startswith("test_")},
        "final_test": {k: v for k, v in rounds[-1].items() if k.startswith("test_")},
        "aggregation_seconds_mean": (
            sum(r["aggregation_seconds"] for r in trained) / len(trained) if trained else None
        ),
        "model_files": [str(results.folder / name) for name in model_files(config)],
    }
    if results.withhold is not None:  # client-level DP publishes none of the rest
        return summary
    return {
        **summary,
        "final_held_out_loss": trained[-1].get("held_out_loss") if trained else None,
        "bytes_up_total": sum(r["bytes_up"] for r in trained),
        "bytes_down_total": sum(r["bytes_down"] for r in trained),
        "bytes_up_per_client_round": _mean_per_client(trained, "bytes_up"),
        "bytes_down_per_client_round": _mean_per_client(trained, "bytes_down"),
        **run_counts(trained),
        **clock.summary(),
        **(clock_summary(rounds, config) if config.simulation.population else {}),
    }


def _plot_clock(results: RunResults, config: RunConfig, title: str) -> None:
    """``simulated_time.png`` and ``round_timeline.png`` (the first trained round)."""
    rounds = results.rounds()
    plot_test_against_hours(rounds, results.folder / TIME_PLOT, title)
    timed = [r for r in rounds if r.get("simulation", {}).get("devices")]
    if timed:
        plot_round_timeline(timed[0], config.simulation.deadline, results.folder / TIMELINE_PLOT)


def _audit(
    config: RunConfig, server_model: ServerModel, final: GlobalModel, results: RunResults
) -> dict[str, Any] | None:
    """audit.canaries: the one-run audit of the final model, written to ``audit.json``."""
    if not config.audit.canaries:
        return None
    record = run_audit(server_model.load(final), server_model.tokenizer, config, results.rounds())
    (results.folder / AUDIT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(
        INFO,
        "privacy audit: %d of %d guesses right on %d canaries: epsilon >= %.3g (95%%), "
        "accountant %s",
        record["right_guesses"],
        record["guesses"],
        record["canaries"],
        record["epsilon_lower_bound"],
        record["accountant_epsilon"] or "none (no DP)",
    )
    return record
