"""One registry mechanism for every name a user types: the generic ``Registry`` and the
registries of models, data sets, cost conventions, import formats and report figures.

Each converted registry is checked the way a user meets it: a typo fails with one line
that names the close matches, a name is matched without regard to case or spaces, and a
component registered with the decorator is usable by name at once.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from zoo_testing import one_torch_thread  # noqa: F401  (module fixture)

from eebench.errors import EebenchError, InputTypeError, UnknownNameError
from eebench.registry import Registry, normalize_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:  # noqa: F811
    """Every test of this module on one torch thread (zoo_testing's fixture)."""


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------- the generic Registry


def test_decorator_registers_under_a_given_or_the_objects_own_name() -> None:
    reg: Registry[object] = Registry("widget", where="widgets --list")

    @reg.register("Round Widget")
    def round_widget() -> str:
        return "round"

    @reg.register()
    def square() -> str:
        return "square"

    class Named:
        name = "Triangle"

    tri = reg.register()(Named)
    assert tri is Named  # the decorator hands the object back unchanged
    assert reg.names() == ["round widget", "square", "triangle"]
    assert reg["round widget"] is round_widget and reg["SQUARE"] is square
    assert len(reg) == 3 and list(reg) == reg.names() and dict(reg.items())["triangle"] is Named
    with pytest.raises(InputTypeError, match="without a name"):
        reg.register("  ", object())


def test_one_case_rule_trimmed_lower_case() -> None:
    reg: Registry[int] = Registry("number")
    reg.register(" Seven ", 7)
    assert normalize_name("  MiXeD Case ") == "mixed case"
    assert reg.names() == ["seven"]
    for spelling in ("seven", "SEVEN", "  Seven\t"):
        assert spelling in reg and reg[spelling] == 7 and reg.key(spelling) == "seven"
    assert 7 not in reg  # only names are keys
    with pytest.raises(InputTypeError, match="by name"):
        reg[7]  # type: ignore[index]


def test_unknown_name_lists_close_matches_and_where_to_see_all() -> None:
    reg: Registry[int] = Registry("solver", where="eebench sweep --help")
    for i, name in enumerate(["geometric", "genetic", "exact", "sweep"]):
        reg.register(name, i)
    with pytest.raises(UnknownNameError) as err:
        reg["geometrc"]
    msg = _one_line(err)
    assert msg.startswith("unknown solver 'geometrc'. Did you mean 'geometric'")
    assert "Known: exact, genetic, geometric, sweep." in msg
    assert msg.endswith("`eebench sweep --help` lists every one.")
    assert "Did you mean" not in str(reg.unknown_message("zzzz"))  # nothing close: no guess
    # many names: the message stops listing them all and points at the listing instead
    big: Registry[int] = Registry("thing", where="things --list")
    for i in range(30):
        big.register(f"thing{i:02d}", i)
    assert "Known:" not in big.unknown_message("thing_1") and "things --list" in big.unknown_message("x")


def test_unknown_name_error_is_a_key_error_and_a_value_error() -> None:
    reg: Registry[int] = Registry("grid")
    reg.register("msdnet", 1)
    for kind in (KeyError, ValueError, EebenchError, UnknownNameError):
        with pytest.raises(kind):
            reg["imta"]
    assert reg.get("imta") is None and reg.get("msdnet") == 1  # Mapping.get relies on KeyError
    # EebenchError keeps the message unquoted even though it is a KeyError
    try:
        reg["imta"]
    except KeyError as exc:
        assert str(exc).startswith("unknown grid 'imta'")


def test_duplicate_registration_is_refused() -> None:
    reg: Registry[object] = Registry("score")

    def confidence() -> None: ...

    reg.register("confidence", confidence)
    reg.register("Confidence", confidence)  # the same object again: harmless (re-imports)
    with pytest.raises(EebenchError, match="'confidence' is already registered"):
        reg.register("CONFIDENCE", lambda: None)
    assert reg["confidence"] is confidence


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


def test_lazy_entry_is_imported_only_when_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = "eebench_registry_test_lazy"
    _write_module(tmp_path, mod, "IMPORTED = True\n\ndef loader():\n    return 'loaded'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)
    reg: Registry[object] = Registry("data set")
    reg.register_lazy("Lazy", f"{mod}:loader")
    # listing, membership, the canonical key and an unknown-name message import nothing
    assert reg.names() == ["lazy"] and "LAZY" in reg and reg.key(" lazy ") == "lazy"
    assert "lazy" in reg.unknown_message("lazzy")
    assert mod not in sys.modules
    fn = reg["lazy"]
    assert mod in sys.modules and fn() == "loaded"
    assert reg["lazy"] is fn  # imported once, then kept
    with pytest.raises(InputTypeError, match="'module:attribute'"):
        reg.register_lazy("broken", "no_colon_here")


def test_decorator_in_a_lazy_entrys_module_registers_the_same_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module named by a lazy entry may register itself with the decorator when imported."""
    holder, mod = "eebench_registry_test_holder", "eebench_registry_test_self"
    _write_module(tmp_path, holder, "from eebench.registry import Registry\nREG = Registry('thing')\n")
    _write_module(tmp_path, mod, f"from {holder} import REG\n\n@REG.register('self')\n"
                                 "def self_registering():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in (holder, mod):
        monkeypatch.delitem(sys.modules, m, raising=False)
    import importlib

    reg = importlib.import_module(holder).REG
    reg.register_lazy("self", f"{mod}:self_registering")
    assert reg["self"]() == 1  # importing the module re-registered the very object: no clash


def test_modules_are_imported_on_first_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder, plugin = "eebench_registry_test_reg", "eebench_registry_test_plugin"
    _write_module(tmp_path, holder, "from eebench.registry import Registry\n"
                                    f"REG = Registry('figure', modules=('{plugin}',))\n")
    _write_module(tmp_path, plugin, f"from {holder} import REG\nREG.register('plugged', 42)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in (holder, plugin):
        monkeypatch.delitem(sys.modules, m, raising=False)
    import importlib

    reg = importlib.import_module(holder).REG
    assert plugin not in sys.modules  # creating the registry imports nothing
    assert reg["plugged"] == 42 and plugin in sys.modules


# ---------------------------------------------------------------- models


def test_model_typo_fails_with_close_matches() -> None:
    from eebench.zoo import MODELS, UnknownModelError, create_model

    with pytest.raises(UnknownModelError) as err:
        create_model("msdnet_cifar100_budjet")
    msg = _one_line(err)
    assert isinstance(err.value, UnknownNameError) and isinstance(err.value, KeyError)
    assert msg.startswith("unknown model 'msdnet_cifar100_budjet'. Did you mean 'msdnet_cifar100_budget'")
    assert "`eebench zoo list`" in msg and "timm/<name>" in msg
    assert MODELS.where == "eebench zoo list"


def test_model_names_are_lower_case_and_matched_without_case() -> None:
    from eebench.zoo import MODELS, is_model, list_models, model_name

    names = MODELS.names()
    assert len(names) > 30 and names == [normalize_name(n) for n in names]
    assert list_models() == names
    assert is_model(" MSDNet_CIFAR100_Budget ") and model_name("MSDNet_cifar100_budget") == "msdnet_cifar100_budget"
    # families sit on top of the registry and follow the same rule
    assert model_name(" TIMM/resnet18 ") == "timm/resnet18" and is_model("timm/resnet18")
    assert not is_model("timm/") and not is_model(3)  # type: ignore[arg-type]
    assert list_models("MSDNet_cifar10_*") == [n for n in names if n.startswith("msdnet_cifar10_")]


def test_created_model_carries_the_registered_name() -> None:
    from eebench.zoo import create_model

    with torch.device("meta"):
        model = create_model(" Timm/ResNet10t ", num_classes=4, exits=[3, 4])
    assert model.config.name == "timm/resnet10t"


# ---------------------------------------------------------------- data sets


def test_dataset_typo_fails_with_close_matches() -> None:
    from eebench.data import DATASETS, UnknownDatasetError, create_dataset

    with pytest.raises(UnknownDatasetError) as err:
        create_dataset("cifar1000")
    msg = _one_line(err)
    assert isinstance(err.value, UnknownNameError)
    assert "unknown data set 'cifar1000'. Did you mean 'cifar100'" in msg and "`eebench data list`" in msg
    assert DATASETS.key(" Digits ") == "digits"


def _squares() -> object:
    from eebench.data import InMemoryImageDataset

    images = torch.zeros(20, 3, 8, 8)
    images[10:, :, 2:6, 2:6] = 1.0
    return InMemoryImageDataset("registry_squares", {}, images, np.array([0] * 10 + [1] * 10),
                                ["empty", "square"], mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.fixture
def scratch_datasets(monkeypatch: pytest.MonkeyPatch) -> Registry[object]:
    """The data set registry, with whatever a test registers removed afterwards."""
    from eebench.data import DATASETS

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    return DATASETS


def test_dataset_registered_with_the_decorator_is_usable_by_a_suite(
    scratch_datasets: Registry[object], tmp_path: Path
) -> None:
    from eebench.data import create_dataset, list_datasets, register_dataset
    from eebench.suite import load_suite

    register_dataset(name="Registry_Squares")(_squares)
    assert "registry_squares" in list_datasets()
    suite_file = tmp_path / "squares.toml"
    suite_file.write_text(
        '[data]\ndataset = " Registry_Squares "\n\n'
        '[[models]]\nname = "MSDNet_cifar10_budget"\n[models.train]\nepochs = 1\n\n'
        '[[policies]]\nscore = "confidence"\nsolver = "geometric"\n'
    )
    suite = load_suite(suite_file)
    # the suite keeps the registered forms of the names it was given
    assert suite["data"]["dataset"] == "registry_squares"
    assert suite["models"][0]["name"] == "msdnet_cifar10_budget"
    test = create_dataset(suite["data"]["dataset"], split="test", seed=suite["data"]["seed"],
                          fractions=suite["data"]["splits"])
    assert 0 < len(test) < 20 and set(test.labels.tolist()) <= {0, 1}
    with pytest.raises(EebenchError, match="already registered"):
        register_dataset(lambda: None, name="digits")


def test_suite_names_the_close_matches_of_a_typo(tmp_path: Path) -> None:
    from eebench.schema import SuiteError
    from eebench.suite import load_suite

    body = ('[data]\ndataset = "{data}"\n\n[[models]]\nname = "{model}"\n\n'
            '[[policies]]\nscore = "confidence"\nsolver = "geometric"\n')
    path = tmp_path / "s.toml"
    path.write_text(body.format(data="digts", model="msdnet_cifar10_budget"))
    with pytest.raises(SuiteError, match=r"data\.dataset: unknown data set 'digts'\. Did you mean 'digits'"):
        load_suite(path)
    path.write_text(body.format(data="digits", model="msdnet_cifar10_budjet"))
    with pytest.raises(SuiteError, match=r"models\[0\]\.name: unknown model .* 'msdnet_cifar10_budget'"):
        load_suite(path)


# ---------------------------------------------------------------- cost conventions


def test_convention_typo_fails_with_close_matches() -> None:
    from eebench.costs import CONVENTIONS, count_costs
    from eebench.zoo.base import ModelConfig, MultiExitModel

    class Tiny(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)
            self.exits = ["a", "b"]
            self.config = ModelConfig(name="tiny", num_classes=3, input_size=(1, 2, 2))

        def iter_exits(self, x):  # noqa: ANN001, ANN202
            x = x.flatten(1)
            yield 0, self.a(x)
            yield 1, self.b(x)

    with pytest.raises(UnknownNameError) as err:
        count_costs(Tiny(), convention="fvcor")
    msg = _one_line(err)
    assert "unknown cost convention 'fvcor'. Did you mean 'fvcore'" in msg
    assert "`eebench costs --list-conventions`" in msg
    costs = count_costs(Tiny(), convention=" FVCore ", cross_check=False)
    assert costs.convention == "fvcore" and costs.macs == [12.0, 24.0]
    assert CONVENTIONS["MSDNET"].name == "msdnet"


def test_conventions_say_what_they_count_and_whether_it_is_cumulative() -> None:
    from eebench.costs import CONVENTIONS, ExitCosts, cumulative_conventions, format_costs_table

    assert set(CONVENTIONS) >= {"fvcore", "msdnet", "dynperceiver"}
    for name, convention in CONVENTIONS.items():
        assert convention.name == name and len(convention.description) > 100
        assert ":" in convention.counter
    assert "dynperceiver" not in cumulative_conventions() and "fvcore" in cumulative_conventions()
    base = dict(model="m", exit_names=["a", "b"], macs=[1e9, 2e9], params=[1, 2], input_size=(3, 8, 8))
    assert "cumulative, earlier heads included" in format_costs_table(ExitCosts(convention="fvcore", **base))
    assert "own counter charges each exit" in format_costs_table(ExitCosts(convention="dynperceiver", **base))
    # costs stored under a convention that is no longer registered still print
    assert "convention retired" in format_costs_table(ExitCosts(convention="retired", **base))


def test_suite_accepts_only_cumulative_conventions(tmp_path: Path) -> None:
    from eebench.costs import cumulative_conventions
    from eebench.schema import SuiteError
    from eebench.suite import load_suite, schema_rows

    row = next(r for r in schema_rows() if r["key"] == "costs.convention")
    assert row["doc"].endswith("one of: " + ", ".join(cumulative_conventions()))
    path = tmp_path / "s.toml"
    path.write_text('[data]\ndataset = "digits"\n\n[costs]\nconvention = "dynperceiver"\n\n'
                    '[[models]]\nname = "msdnet_cifar10_budget"\n\n'
                    '[[policies]]\nscore = "confidence"\nsolver = "geometric"\n')
    with pytest.raises(SuiteError, match="costs.convention.*must be one of fvcore, msdnet"):
        load_suite(path)


def _imports(path: Path) -> set[str]:
    """Every eebench module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eebench"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("eebench"))
    return found


def test_cost_modules_import_each_other_without_a_cycle() -> None:
    """The counters take their result type from ``conventions``, which names them only as
    strings; so no module of eebench.costs reaches itself through imports."""
    folder = ROOT / "eebench" / "costs"
    modules = {f"eebench.costs.{p.stem}" if p.stem != "__init__" else "eebench.costs": p
               for p in folder.glob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    assert [m for m in modules if reaches(m, m, set())] == []
    for counter in ("fvcore_counter", "msdnet_counter", "dynperceiver_counter"):
        assert "eebench.costs.exit_costs" not in graph[f"eebench.costs.{counter}"]
    assert graph["eebench.costs.conventions"] == set()  # it names the counters as strings


# ---------------------------------------------------------------- import formats


def test_format_typo_fails_with_close_matches(tmp_path: Path) -> None:
    from eebench.report.imported import FORMATS, import_curve

    path = tmp_path / "dynamic.txt"
    path.write_text("70.0\t1000000\n75.0\t2000000\n")
    with pytest.raises(UnknownNameError) as err:
        import_curve(path, "dynamic_text", cost_unit="macs")
    msg = _one_line(err)
    assert "unknown import format 'dynamic_text'. Did you mean 'dynamic_txt'" in msg
    assert "`eebench import-curve --help`" in msg
    # names match without case; each format is its reader and its detector
    assert len(import_curve(path, " Dynamic_TXT ", cost_unit="macs")) == 2
    assert FORMATS.names() == ["calibrated_dnn", "dvt_checkpoint", "dynamic_txt", "l2w"]
    for name, fmt in FORMATS.items():
        assert fmt.name == name and callable(fmt.read) and callable(fmt.detect)


def test_flops_path_is_refused_by_formats_that_do_not_read_it(tmp_path: Path) -> None:
    from eebench.report.imported import import_curve

    path = tmp_path / "dynamic.txt"
    path.write_text("70.0\t1000000\n")
    with pytest.raises(ValueError, match="flops_path is for the 'l2w' format only, not 'dynamic_txt'"):
        import_curve(path, "dynamic_txt", cost_unit="macs", flops_path=tmp_path / "flops.txt")


# ---------------------------------------------------------------- report figures


def test_report_figures_are_registered_in_drawing_order() -> None:
    from eebench.report.figures import FIGURES

    figures = sorted(FIGURES.values(), key=lambda f: f.order)
    assert [f.name for f in figures] == ["anytime", "budgeted", "exit_distribution", "speedup",
                                         "latency_curves", "reliability", "calibration"]
    assert len({f.order for f in figures}) == len(figures)
    assert all(f.heading and callable(f.draw) for f in figures)
    with pytest.raises(UnknownNameError, match="unknown report figure 'reliabilty'. Did you mean 'reliability'"):
        FIGURES["reliabilty"]


# ---------------------------------------------------------------- the command line


def test_command_line_help_reads_the_names_from_the_registries(capsys: pytest.CaptureFixture[str]) -> None:
    from eebench.cli import build_parser
    from eebench.costs import CONVENTIONS
    from eebench.data import DATASETS
    from eebench.report.imported import FORMATS

    parser = build_parser()
    for argv, names in ((["costs", "--help"], CONVENTIONS.names()),
                        (["train", "--help"], DATASETS.names()),
                        (["import-curve", "--help"], FORMATS.names())):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        out = " ".join(capsys.readouterr().out.split())
        assert all(n in out for n in names), (argv, names)
    args = parser.parse_args(["import-curve", "x.txt", "--out", "x.csv", "--dataset", "imagenet",
                              "--format", "L2W"])
    assert args.format == "l2w"
