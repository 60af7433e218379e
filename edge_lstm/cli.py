"""The `edgelstm` command: a lazy click group so a gateway without torch can still `serve`."""

from __future__ import annotations

import importlib
import logging

import click

from edge_lstm import __version__

# command name -> (module:attribute, one-line help shown by `edgelstm --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("edge_lstm.commands.simulate:simulate", "Write built-in demo sensor logs."),
    "train-teacher": (
        "edge_lstm.commands.train_teacher:train_teacher",
        "Train the BiLSTM+attention teacher.",
    ),
    "evaluate": (
        "edge_lstm.commands.evaluate:evaluate",
        "Metrics and plots for a checkpoint, ONNX file or engine.",
    ),
    "distill": ("edge_lstm.commands.distill:distill", "Distill the teacher into a small student."),
    "export": ("edge_lstm.commands.export:export", "Export a checkpoint to a deployment folder."),
    "quantize": ("edge_lstm.commands.quantize:quantize", "Quantize a deployment folder to int8."),
    "build-engine": (
        "edge_lstm.commands.build_engine:build_engine",
        "Build a TensorRT engine (needs TensorRT and a GPU).",
    ),
    "serve": ("edge_lstm.commands.serve:serve", "Run the MQTT inference daemon on a gateway."),
    "replay": ("edge_lstm.commands.replay:replay", "Publish a dataset's runs as live devices."),
    "feedback": ("edge_lstm.commands.feedback:feedback", "Export confirmed alerts as train data."),
    "retrain-check": ("edge_lstm.commands.retrain_check:retrain_check", "Say whether to retrain."),
    "report": ("edge_lstm.commands.report:report", "Write the demo report from a runs folder."),
    "bench": ("edge_lstm.commands.bench:bench", "Run the benchmarks and write bench/results.json."),
}


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Project exceptions that mean "the user can fix this": printed as one line, exit 2."""
    from edge_lstm.errors import EdgeLstmError
    from runtime.errors import EdgeRuntimeError

    return (EdgeLstmError, EdgeRuntimeError)


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or its help is shown)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name][0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(
                f"`edgelstm {cmd_name}` needs a package that is not installed ({exc.name}): "
                "install the matching extra, e.g. pip install 'edgelstm[train]' "
                "or 'edgelstm[runtime]'"
            ) from exc
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Lists commands from the table, so `edgelstm --help` imports none of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _user_error_types() as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgelstm")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
def main(verbose: int) -> None:
    """edgelstm: sensor logs to fault alerts on edge gateways.

    Pipeline: simulate → train-teacher → distill → export → quantize → build-engine →
    serve. Run `edgelstm COMMAND --help` for each step.
    """
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
