"""The package's layout, checked from the source (`ast`): no import circle, no import from a lower layer to a
higher one (imports inside functions count; `if TYPE_CHECKING:` blocks do not run and do not count), the
checkpoint's code flat with single-dot imports, a small package root, and `import hf_mrl` / `hf-mrl --help`
free of the heavy libraries."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_mrl"
# Lowest first: a module may import its own layer and the layers below it. The root `__init__` (the public
# API, loaded lazily) may import anything; `testing_utils` sits on top of modeling and nothing imports it.
LAYERS = ["modeling", "data", "output_folder", "index", "evaluation", "hub", "training", "recipes", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path, modules: set[str]) -> list[tuple[str, int, int]]:
    """(imported hf_mrl module, line, level) for each import of `path`, at module level or inside functions."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            targets = [f"{base}.{alias.name}" for alias in node.names] if base.startswith("hf_mrl") else []
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.startswith("hf_mrl")]
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.append((target, node.lineno, getattr(node, "level", 0)))
    return found


def _graph() -> dict[str, list[tuple[str, int, int]]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) for path in paths}


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else None
    return LAYERS.index(part) if part in LAYERS else None


def test_no_import_circle():
    graph = {module: {target for target, _, _ in imports} for module, imports in _graph().items()}
    state: dict[str, str] = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(target):], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = []
    for module, imports in _graph().items():
        if module in ("hf_mrl", "hf_mrl.testing_utils"):
            continue
        for target, line, _ in imports:
            if target == "hf_mrl" or (_layer(target) or 0) > (_layer(module) or 0):
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []


def test_the_checkpoint_code_is_flat_with_single_dot_imports():
    """What `trust_remote_code` copies into a model folder must import only its siblings, relatively."""
    wrong = [
        f"{module}:{line} imports {target}"
        for module, imports in _graph().items() if module.startswith("hf_mrl.modeling.")
        for target, line, level in imports
        if level != 1 or not target.startswith("hf_mrl.modeling.")
    ]
    assert wrong == []
    assert [path.name for path in (PACKAGE / "modeling").iterdir() if path.is_dir() and path.name != "__pycache__"] == []


def test_nothing_in_the_package_imports_the_test_references():
    users = [module for module, imports in _graph().items() for target, _, _ in imports if target == "hf_mrl.testing_utils"]
    assert users == []


def test_the_package_root_holds_at_most_four_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= 4, sorted(path.name for path in PACKAGE.glob("*.py"))


HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "qdrant_client", "qdrant_edge", "matplotlib",
         "datasets", "sklearn")


@pytest.mark.slow
@pytest.mark.parametrize("code", [
    "import hf_mrl",
    "import sys; sys.argv = ['hf-mrl', 'eval', '--help']\nfrom hf_mrl.cli import main\ntry: main()\nexcept SystemExit: pass",
])
def test_import_and_help_load_no_heavy_library(code):
    probe = f"{code}\nimport sys; print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent, env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert loaded.stdout.strip().splitlines()[-1] == "loaded:", loaded.stdout.strip().splitlines()[-1]


def test_importing_hf_mrl_still_registers_the_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel

    import hf_mrl

    config = AutoConfig.for_model("matryoshka", backbone_config={"model_type": "vit", "hidden_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
                                  "image_size": 28, "patch_size": 7, "num_channels": 1}, embedding_dim=16)
    assert isinstance(config, hf_mrl.MatryoshkaConfig)
    assert type(AutoModel.from_config(config)) is hf_mrl.MatryoshkaModel
