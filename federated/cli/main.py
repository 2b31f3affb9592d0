"""The ``fedtune`` command: the chores around Flower's own commands.

fedtune run [APP] [SUPERLINK] [flwr run options]   flwr run, exiting with the run's status
fedtune certs --host NAME [--host ADDR ...]         a CA and the SuperLink's TLS certificate
fedtune node-key PATH                               a SuperNode's key pair for node auth
fedtune commands --address HOST:PORT --nodes N ...  the deployment's exact command lines
fedtune check-link --superlink HOST:PORT ...        can a device reach its SuperLink, or why not
fedtune results RUN_DIR                             what a run did
fedtune ledger [--state-dir DIR]                    a device's privacy ledgers, per data source
fedtune plan MODEL (--gpu-gb N | --memory-gb N | --device PROFILE) ...
                                                    will its training fit, and what would
fedtune generate RUN_DIR (--prompt TEXT | --prompts FILE | --chat) [--base]
                                                    what a run's language model answers
fedtune predict RUN_DIR (--text TEXT | --texts FILE) [--base]
                                                    the class a run's classifier gives
fedtune evaluate RUN_DIR [--data FILE] [--per-partition]
                                                    base and fine-tuned model measured side by side
fedtune export RUN_DIR [--round N] [--out DIR] [--gguf TYPE ...]
                                                    the trained model for other runtimes

Each command imports what it needs when it runs: ``check-link`` runs before every SuperNode
starts, and the ledger's imports (opacus) alone take seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedtune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="run the app with flwr run, exit with its status", add_help=False
    )
    certs = commands.add_parser("certs", help="make a CA and the SuperLink's TLS certificate")
    certs.add_argument(
        "--out",
        type=Path,
        default=Path("certificates"),
        help="folder for ca.crt, ca.key, server.pem, server.key",
    )
    certs.add_argument(
        "--host",
        action="append",
        required=True,
        help="a host name or IP address devices reach the SuperLink at (repeat for each)",
    )
    certs.add_argument("--days", type=int, default=365, help="validity (default 365)")
    key = commands.add_parser("node-key", help="make a SuperNode's key pair (node auth)")
    key.add_argument("path", type=Path, help="private key file; the public key is PATH.pub")
    lines = commands.add_parser("commands", help="print a deployment's command lines")
    lines.add_argument("--address", required=True, help="HOST:PORT devices reach the SuperLink at")
    lines.add_argument("--nodes", type=int, required=True, help="number of SuperNodes")
    lines.add_argument("--certs", type=Path, help="fedtune certs' folder (omit: no TLS)")
    lines.add_argument(
        "--keys",
        type=Path,
        help="folder of node-<i>.key from fedtune node-key (omit: no node auth); writes "
        "partition-keys.json there, binding partition i to node i's key",
    )
    lines.add_argument("--database", type=Path, help="the SuperLink's state file")
    link = commands.add_parser(
        "check-link",
        help="check that a device reaches its SuperLink (exit 1 with the reason if not)",
    )
    link.add_argument("--superlink", required=True, help="HOST:PORT, as flower-supernode takes it")
    trust = link.add_mutually_exclusive_group(required=True)
    trust.add_argument("--root-certificates", type=Path, help="the CA certificate (ca.crt)")
    trust.add_argument("--insecure", action="store_true", help="a plaintext SuperLink")
    link.add_argument(
        "--timeout", type=float, default=5.0, help="seconds for each step (default 5)"
    )
    results = commands.add_parser("results", help="what a run did, from its folder")
    results.add_argument("run_dir", type=Path)
    ledger = commands.add_parser(
        "ledger",
        help="what record-level DP has spent on a device's "
        "data: runs, rounds, epsilon per data source",
    )
    ledger.add_argument(
        "--state-dir",
        type=Path,
        help="the node's state folder (default: $FEDTUNE_STATE_DIR, else ~/.local/state/fedtune)",
    )
    plan = commands.add_parser(
        "plan", help="will a model's training fit a device (from its config), and what would"
    )
    from federated.cli.plan_command import add_arguments

    add_arguments(plan)
    from federated.cli.evaluate_command import add_evaluate_arguments
    from federated.cli.generate_command import add_generate_arguments, add_predict_arguments
    from federated.cli.use_arguments import add_run_arguments

    add_generate_arguments(
        commands.add_parser("generate", help="what a run's language model answers (or chat)")
    )
    add_predict_arguments(commands.add_parser("predict", help="what a run's classifier says"))
    add_evaluate_arguments(
        commands.add_parser("evaluate", help="the base and fine-tuned model on the same examples")
    )
    export = commands.add_parser(
        "export",
        help="write a run's model merged, in transformers' format (and GGUF files for "
        "llama.cpp-based runtimes)",
    )
    add_run_arguments(export)
    export.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="the folder to write (default: RUN_DIR/export, made if missing)",
    )
    export.add_argument(
        "--gguf",
        action="append",
        default=[],
        choices=("f16", "q8_0", "q4_0"),
        metavar="TYPE",
        help="also write <model>-TYPE.gguf, TYPE one of f16, q8_0, q4_0 (repeat for several); "
        "llama-family causal LMs only",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from federated.cli.run_command import run

        return run(argv[1:])  # every other option goes to flwr run
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except (ValueError, OSError) as err:
        print(f"fedtune {args.command}: {err}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    if args.command == "check-link":
        from federated.deploy.link_check import UnreachableSuperLink, check_link

        try:
            print(check_link(args.superlink, args.root_certificates, args.timeout))
        except UnreachableSuperLink as err:
            print(
                f"fedtune check-link: cannot reach the SuperLink at {args.superlink}: {err}",
                file=sys.stderr,
            )
            return 1
    elif args.command == "certs":
        from federated.deploy.certificates import make_certificates

        files = make_certificates(args.out, args.host, args.days)
        print("\n".join(f"wrote {path}" for path in files.all()))
        print(f"keep {files.ca_key} offline; copy {files.ca_cert} to every device")
    elif args.command == "node-key":
        from federated.deploy.node_keys import make_node_key

        private, public = make_node_key(args.path)
        print(f"wrote {private} (stays on the device) and {public} (register it)")
    elif args.command == "commands":
        from federated.deploy.commands import Deployment, deployment_commands

        deployment = Deployment(args.address, args.nodes, args.certs, args.keys, args.database)
        text = deployment_commands(deployment)
        if (table := deployment.write_partition_table()) is not None:
            print(f"# wrote {table}: partition i goes to node-<i>.key.pub's key alone")
        print(text)
    elif args.command == "plan":
        from federated.cli.plan_command import plan_command

        report, fits = plan_command(args)
        print(report)
        return 0 if fits else 1
    elif args.command in ("generate", "predict", "evaluate"):
        from federated.cli.evaluate_command import evaluate_command
        from federated.cli.generate_command import generate_command, predict_command

        commands = {
            "generate": generate_command,
            "predict": predict_command,
            "evaluate": evaluate_command,
        }
        return commands[args.command](args)
    elif args.command == "export":
        from federated.cli.export_report import export_command

        print(export_command(args.run_dir, args.server_round, args.out, tuple(args.gguf)))
    elif args.command == "ledger":
        from federated.cli.ledger_report import describe_ledgers
        from federated.node_state import default_state_root

        print(describe_ledgers(args.state_dir or default_state_root()))
    else:
        from federated.cli.run_report import describe_run

        print(describe_run(args.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
