"""Parameter references in specs: "$width" or "${width * 2}", evaluated by archc itself (never eval)."""
from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

from archc.errors import SpecError

_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_EXPR = re.compile(r"^\$\{(.*)\}$", re.S)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_FUNCS = {"min": min, "max": max}
MAX_VALUE = 10 ** 15  # keeps `2 ** 2 ** 99` from hanging the compiler
MAX_LENGTH = 200


def is_ref(value: Any) -> bool:
    return isinstance(value, str) and (bool(_REF.match(value)) or bool(_EXPR.match(value)))


def evaluate(text: str, params: dict[str, Any]) -> Any:
    """Evaluate one "$name" or "${expr}" string over `params`; SpecError when it cannot."""
    m = _REF.match(text)
    if m:
        return _lookup(m.group(1), params)
    m = _EXPR.match(text)
    assert m, text
    if len(text) > MAX_LENGTH:  # also keeps the parser and _eval far from their recursion limits
        raise SpecError(f"expected an expression of at most {MAX_LENGTH} characters, received {len(text):,}")
    try:
        tree = ast.parse(m.group(1).strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpecError(f"expected an arithmetic expression in '{text}', received a syntax error") from None
    value = _eval(tree.body, params, text)
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"expected a finite value from '{text}', received {value}")
    # "${ch / 2}" reads as a size: an integral float becomes an int (float fields accept ints anyway)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _lookup(name: str, params: dict[str, Any]) -> Any:
    if name not in params:
        from archc.language.errors import close_matches  # here, not at the top: spec.errors imports the op registry
        known = ", ".join(sorted(params)) or "none"
        raise SpecError(f"unknown parameter '{name}'",
                        hint=close_matches(name, set(params)) or f"parameters in scope: {known}")
    return params[name]


def _eval(node: ast.AST, params: dict[str, Any], text: str) -> Any:
    """Numbers, parameter names, + - * / // % **, unary minus, min() and max(), and for choices per repeat
    comparisons, and/or/not, true/false and `a if test else b`; nothing else."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("true", "false"):  # TOML's and JSON's spelling
        return node.id == "true"
    if isinstance(node, (ast.Compare, ast.BoolOp, ast.IfExp)) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return _eval_logic(node, params, text)
    if isinstance(node, ast.Name):
        return _lookup(node.id, params)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, params, text), _eval(node.right, params, text)
        _numbers(text, left, right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > MAX_VALUE):
            raise SpecError(f"expected a small exponent in '{text}', received {left} ** {right}")
        try:
            result = _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise SpecError(f"division by zero in '{text}'") from None
        except OverflowError:  # 1e15 ** 64
            raise SpecError(f"expected a value of at most {MAX_VALUE:.0e} from '{text}', received an overflow") from None
        if isinstance(result, complex):
            raise SpecError(f"expected a real number from '{text}', received a complex one")
        if abs(result) > MAX_VALUE:
            raise SpecError(f"expected a value of at most {MAX_VALUE:.0e} from '{text}', received {result!r}")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value = _eval(node.operand, params, text)
        _numbers(text, value)
        return _UNARY[type(node.op)](value)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and node.args and not node.keywords):
        args = [_eval(a, params, text) for a in node.args]
        _numbers(text, *args)
        return _FUNCS[node.func.id](args)
    raise SpecError(f"expected only numbers, parameter names, + - * / // % **, min/max, comparisons, "
                    f"and/or/not and 'a if test else b' in '{text}', "
                    f"received '{ast.unparse(node)}'")


def _eval_logic(node: ast.AST, params: dict[str, Any], text: str) -> Any:
    """Comparisons (numbers, or == / != of any values), and/or/not over booleans, and `a if test else b`."""
    if isinstance(node, ast.Compare):
        left, result = _eval(node.left, params, text), True
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, params, text)
            if type(op) not in _COMPARE:
                raise SpecError(f"expected == != < <= > >= in '{text}', received '{ast.unparse(node)}'")
            if not isinstance(op, (ast.Eq, ast.NotEq)):
                _numbers(text, left, right)
            result, left = result and _COMPARE[type(op)](left, right), right
        return result
    if isinstance(node, ast.BoolOp):
        values = [_boolean(text, _eval(v, params, text)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        return not _boolean(text, _eval(node.operand, params, text))
    assert isinstance(node, ast.IfExp)
    test = _boolean(text, _eval(node.test, params, text))
    return _eval(node.body if test else node.orelse, params, text)


def _boolean(text: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"expected true or false in '{text}', received {value!r}",
                        hint="compare it: '${i == 0}', '${t != 1}'")
    return value


def _numbers(text: str, *values: Any) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(f"expected numbers in '{text}', received {v!r}")


def substitute(value: Any, params: dict[str, Any]) -> Any:
    """Replace every reference inside a (nested) attribute value."""
    if is_ref(value):
        return evaluate(value, params)
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    return value
