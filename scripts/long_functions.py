"""The longest functions of a package, by body lines (after the docstring), longest first.

    python3 scripts/long_functions.py orchestrator 15
"""

import ast
import pathlib
import sys


def main(root: pathlib.Path, count: int) -> None:
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(node.body) > 1
                start = node.body[1].lineno if has_doc else first.lineno
                rows.append((node.end_lineno - start + 1, f"{path}:{node.name}"))
    for lines, where in sorted(rows, reverse=True)[:count]:
        print(lines, where)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "orchestrator"), int(sys.argv[2]) if len(sys.argv) > 2 else 15)
