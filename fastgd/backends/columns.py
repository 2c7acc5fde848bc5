"""Row functions as column functions: one row function's math on many lines side by side.

A row function (``formulas.softmax_row``...) walks one line of its arrays: scalar statements,
and loops ``for i in lanes(n)`` over the line's elements. Along an axis other than the last,
the lines ``a[o, :, j]`` of consecutive j lie side by side in memory: a loop along one of
them walks with a stride and does not vectorize. :func:`columns` rewrites the row function
into one that runs the columns ``j0 <= j < j1`` of a plane ``a[o]`` (length, inner) at once:

* each element loop gets an inner loop over the columns (contiguous: it vectorizes), on
  row views ``a[i, j0:j1]`` taken before it;
* each scalar that depends on the data becomes an array of one value per column, and each
  statement that sets one a loop over the columns;
* a helper that loops over ``lanes`` is inlined; ``lanes_sum``/``lanes_max`` are the value
  itself (one thread per line).

With ``split_rows`` the function runs all the columns of a plane at once, and each element
loop's rows are shared by the threads (``prange``): a loop's sums add each thread's part in
float64 rows of their own (:func:`split_chunks`), added into the sums after the loop. A loop
whose rows depend on the row before (a running maximum: a name it sets other than by
``+=``) cannot split: ``NotImplementedError``.

Every column sees the row function's operations in the row function's order, but for its
sums, which add blocks in float64 first (:data:`SUM_BLOCK`). What the
rewrite takes: assignments and augmented assignments to names, element stores ``a[k] = v``,
``for`` over ``lanes(n)`` or over a ``range`` the same for every column, and calls given
elements (a line passed whole must go to a helper that loops over lanes); anything else
raises ``NotImplementedError``, as do a name an element loop sets and another part reads,
and a data-dependent name first set to a bare number. Such a name keeps the type of its
first value (``s = W(0)`` for a wide sum), where Numba would widen a scalar to the types it
is given later.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

import numpy as np

K, J0, J1, WIDTH = "_k", "_j0", "_j1", "_width"  # column in the block, the block, its width
RESULT = "_returned"  # what a row function returns, per column
#: A column's sums add this many elements into a float64 partial sum before they add that
#: into theirs: a row's sums run in the lanes of a vector loop, a column's one element after
#: the other (float64 softmax backward down 5000 rows: 3.9e-12 off in one running sum; a
#: float32 sum, log_softmax's, is rounded once a block).
SUM_BLOCK = 64


def _is_lanes_loop(node) -> bool:
    return (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
            and isinstance(node.iter.func, ast.Name) and node.iter.func.id == "lanes")


def _function(fn) -> ast.FunctionDef:
    """``fn``'s definition, its docstring dropped."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    tree.body = body
    tree.decorator_list = []
    return tree


def _loops_over_lanes(fn) -> bool:
    return getattr(fn, "_fastgd_scalar", False) is True and _has_lanes_loop(fn)


@functools.cache  # asked of every call in a row function: its source parsed once
def _has_lanes_loop(fn) -> bool:
    return any(_is_lanes_loop(node) for node in ast.walk(_function(fn)))


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict):
        self.names = names

    def visit_Name(self, node):
        new = self.names.get(node.id)
        if new is None:
            return node
        return ast.copy_location(ast.Name(new, node.ctx), node)


def _inline(body: list, glb: dict, count: list) -> list:
    """``body`` with each ``name = helper(arrays...)`` of a helper that loops over lanes
    replaced by the helper's statements (its locals renamed), its ``return v`` as
    ``name = v``."""
    out = []
    for stmt in body:
        if isinstance(stmt, ast.For):
            stmt.body = _inline(stmt.body, glb, count)
        call = stmt.value if isinstance(stmt, ast.Assign) else None
        helper = (glb.get(call.func.id) if isinstance(call, ast.Call)
                  and isinstance(call.func, ast.Name) else None)
        if helper is None or not _loops_over_lanes(helper):
            for node in ast.walk(stmt):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and _loops_over_lanes(glb.get(node.func.id))):
                    raise NotImplementedError(
                        f"{node.func.id}() loops over lanes: call it as `name = "
                        f"{node.func.id}(...)`")
            out.append(stmt)
            continue
        tree = _function(helper)
        differ = [n for n in _loaded(tree) if n in helper.__globals__
                  and glb.get(n, None) is not helper.__globals__[n]]
        if differ:  # its statements run with the caller's globals
            raise NotImplementedError(f"{helper.__name__} reads {sorted(differ)}, which "
                                      f"{'differ' if len(differ) > 1 else 'differs'} in the "
                                      "caller's module")
        *steps, ret = tree.body
        if not isinstance(ret, ast.Return) or any(
                isinstance(n, ast.Return) for s in steps for n in ast.walk(s)):
            raise NotImplementedError(f"{helper.__name__} must end in its only return")
        count[0] += 1
        names = {p.arg: a.id for p, a in zip(tree.args.args, call.args)}
        names.update({v: f"_{helper.__name__}{count[0]}_{v}" for v in _stored(steps)})
        rename = _Rename(names)
        renamed = [rename.visit(s) for s in steps]
        out += _inline([*renamed, ast.Assign(stmt.targets, rename.visit(ret.value))], glb, count)
    return out


def _stored(nodes) -> set:
    return {n.id for s in nodes for n in ast.walk(s)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _loaded(node) -> set:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _reads_elements(node, arrays) -> bool:
    return any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
               and n.value.id in arrays for n in ast.walk(node))


def _own_names_read_elsewhere(body: list, loop, own: set) -> set:
    """The names of ``own`` (set in element loop ``loop`` only) read outside it, other
    element loops' reads of the names they set themselves not counted."""
    read = set()

    def visit(node, local):
        if node is loop:
            return
        if _is_lanes_loop(node):  # its names are its own once it has set them
            local = set(local)
            for s in node.body:
                visit(s, local)
                local |= _stored([s])
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
            read.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, local)

    for s in body:
        visit(s, set())
    return read & own


def _varying(body: list, arrays: set, given: set) -> set:
    """The names outside element loops whose value differs between columns: ``given`` (the
    per-line parameters), those also set in an element loop, and those set from data or from
    other such names."""
    inside, outside, sets = set(), set(), []

    def walk(stmts):
        for s in stmts:
            if _is_lanes_loop(s):
                inside.update(_stored(s.body))
            elif isinstance(s, ast.For):
                walk(s.body)
            elif isinstance(s, (ast.Assign, ast.AugAssign)):
                targets = s.targets if isinstance(s, ast.Assign) else [s.target]
                names = _stored(targets)
                outside.update(names)
                sets.append((names, s.value))
            else:
                raise NotImplementedError(f"a row function statement: {ast.unparse(s)}")

    walk(body)
    for loop in (n for s in body for n in ast.walk(s) if _is_lanes_loop(n)):
        read = _own_names_read_elsewhere(body, loop, _stored(loop.body) - outside)
        if read:  # which column's value would that be?
            raise NotImplementedError(f"{sorted(read)}: set in an element loop only and read "
                                      "outside it")
    varying = (inside & outside) | given
    changed = True
    while changed:
        changed = False
        for names, value in sets:
            if not names <= varying and (_loaded(value) & varying
                                         or _reads_elements(value, arrays)):
                varying |= names
                changed = True
    return varying


class _Columns(ast.NodeTransformer):
    """Rewrites an expression for column ``K`` of the block: data-dependent names as
    ``name[K]``, elements ``a[k]`` as ``view[K]`` (``views`` maps ``(a, k)`` to the name of the
    row view taken before the column loop), ``a.size`` as the line length,
    ``lanes_sum(v)``/``lanes_max(v)`` as ``v``."""

    def __init__(self, arrays, varying, views=None):
        self.arrays, self.varying, self.views = arrays, varying, views

    def visit_Name(self, node):
        if node.id in self.varying:
            return ast.Subscript(ast.Name(node.id, ast.Load()), ast.Name(K, ast.Load()), node.ctx)
        if node.id in self.arrays:  # not an element, not its .size: a call given the line
            raise NotImplementedError(f"{node.id} passed whole: a helper that reads a line "
                                      "must loop over lanes (and is inlined)")
        return node

    def visit_Attribute(self, node):
        if (isinstance(node.value, ast.Name) and node.value.id in self.arrays
                and node.attr == "size"):
            return ast.parse(f"{node.value.id}.shape[0]", mode="eval").body
        return self.generic_visit(node)

    def visit_Subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.arrays:
            if self.views is None:
                raise NotImplementedError("an element read outside an element loop")
            index = ast.unparse(_Columns(self.arrays, set()).visit(node.slice))  # a.size
            view = self.views.setdefault((node.value.id, index),
                                         f"_{node.value.id}{len(self.views)}")
            return ast.Subscript(ast.Name(view, ast.Load()), ast.Name(K, ast.Load()), node.ctx)
        return self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id in ("lanes_sum", "lanes_max"):
            return self.visit(node.args[0])
        return self.generic_visit(node)


def _over_columns(stmts: list, lines_first=()) -> list:
    """``stmts`` in a loop over the block's columns, after ``lines_first``."""
    loop = ast.parse(f"for {K} in range({WIDTH}):\n    pass").body[0]
    loop.body = stmts
    return [*lines_first, loop]


class _Rewrite:
    def __init__(self, arrays: set, varying: set, split_rows: bool = False):
        self.arrays, self.varying, self.made = arrays, varying, set()
        self.split_rows = split_rows  # each element loop's rows split among the threads
        # in a loop over blocks: the names it sets, the arrays made before it, and those
        # made in it
        self.loop_names, self.hoisted, self.made_in_loop = None, [], set()

    def uniform(self, node):
        """An expression the same for every column (only ``a.size`` rewritten)."""
        if _loaded(node) & self.varying or _reads_elements(node, self.arrays):
            raise NotImplementedError(f"{ast.unparse(node)} differs between columns")
        return _Columns(self.arrays, set()).visit(node)

    def block(self, stmts: list) -> list:
        out = []
        for s in stmts:
            if _is_lanes_loop(s):
                out += self.element_loop(s)
            elif isinstance(s, ast.For):
                if self.split_rows:
                    raise NotImplementedError("a loop around element loops: split_rows "
                                              "splits the element loops themselves")
                s.iter = self.uniform(s.iter)
                outermost = self.loop_names is None
                if outermost:
                    self.loop_names = _stored([s])
                s.body = self.block(s.body)
                if outermost:  # arrays first set in it made once, before it
                    out += self.hoisted
                    self.loop_names, self.hoisted, self.made_in_loop = None, [], set()
                out.append(s)
            else:
                out += self.scalar(s)
        return out

    def scalar(self, s) -> list:
        """An assignment outside element loops: as is where it is the same for every column,
        else a loop over the columns (after the row views of the elements it reads or
        writes), the first one of a name into a new array made from column 0's value (which
        gives the array its type)."""
        targets = s.targets if isinstance(s, ast.Assign) else [s.target]
        element = any(isinstance(t, ast.Subscript) for t in targets)
        if not (_stored(targets) & self.varying or element
                or _reads_elements(s.value, self.arrays)):
            s.value = self.uniform(s.value)
            return [s]
        if len(targets) != 1 or not isinstance(targets[0], (ast.Name, ast.Subscript)):
            raise NotImplementedError(f"set one data-dependent value at a time: {ast.unparse(s)}")
        views = {}
        rewrite = _Columns(self.arrays, self.varying, views)
        value = ast.unparse(rewrite.visit(s.value))
        target = ast.unparse(rewrite.visit(targets[0]))
        out = self.views(views, set())
        name = targets[0].id if isinstance(targets[0], ast.Name) else None
        if name is not None and name not in self.varying:
            raise NotImplementedError(f"{name} is set from the data but not varying")
        if name in self.made and value == target and isinstance(s, ast.Assign):
            return []  # v = lanes_sum(v)
        if name is not None and name not in self.made:
            if isinstance(s, ast.AugAssign):
                raise NotImplementedError(f"{name} is updated before it is set")
            if isinstance(s.value, ast.Constant):  # its array would take the constant's type
                raise NotImplementedError(f"{ast.unparse(s)}: give {name} its type, e.g. "
                                          f"{name} = F({ast.unparse(s.value)})")
            self.made.add(name)
            first = value.replace(f"[{K}]", "[0]")
            make = ast.parse(f"{name} = np.full({WIDTH}, {first})").body[0]
            if (self.loop_names is not None and first == value
                    and not _loaded(s.value) & self.loop_names):
                self.hoisted.append(make)  # set again below, each time round
            else:
                out.append(make)
                if self.loop_names is not None:
                    self.made_in_loop.add(name)
                if first == value:  # the same for every column: set
                    return out
        op = "=" if isinstance(s, ast.Assign) else ast.unparse(
            ast.AugAssign(ast.Name("v"), s.op, ast.Constant(0))).split()[1]
        return out + _over_columns(ast.parse(f"{target} {op} {value}").body)

    def views(self, views: dict, local: set) -> list:
        """``view = a[index, j0:j1]`` for each element ``a[index]`` a statement reads or
        writes, its index checked to be the same for every column."""
        for array, index in views:
            if _loaded(ast.parse(index, mode="eval")) & (local | self.varying):
                raise NotImplementedError(f"{array}[{index}]: an index that differs by column")
        return [ast.parse(f"{view} = {array}[{index}, {J0}:{J1}]").body[0]
                for (array, index), view in views.items()]

    def element_loop(self, loop) -> list:
        """``for i in lanes(n)`` as ``for i in range(n)`` around a loop over the columns, the
        row views of the elements it reads and writes taken before that. Its sums ``s += v``
        (``s`` read and set nowhere else in it) add blocks of :data:`SUM_BLOCK` elements in
        float64 first."""
        if len(loop.iter.args) != 1 or loop.iter.keywords:
            raise NotImplementedError(f"{ast.unparse(loop.iter)}: lanes takes one length")
        for s in loop.body:
            if not isinstance(s, (ast.Assign, ast.AugAssign)):
                raise NotImplementedError(f"in an element loop: {ast.unparse(s)}")
        read = {n for s in loop.body for n in _loaded(s.value)}
        other = {n for s in loop.body if not (isinstance(s, ast.AugAssign)
                                              and isinstance(s.op, ast.Add))
                 for n in _stored([s])}  # set another way than by += in this loop
        sums = {s.target.id: f"_part_{s.target.id}" for s in loop.body
                if isinstance(s, ast.AugAssign) and isinstance(s.op, ast.Add)
                and isinstance(s.target, ast.Name) and s.target.id in self.varying
                and s.target.id not in read | other}
        carried = (_stored(loop.body) & self.varying) - set(sums)
        if self.split_rows and carried:  # a running maximum...: each row needs the one before
            raise NotImplementedError(f"{sorted(carried)} carried from row to row")
        if self.split_rows:  # an element other than the row's, written by every row: a race
            i_name = ast.unparse(loop.target)
            for s in loop.body:
                targets = s.targets if isinstance(s, ast.Assign) else [s.target]
                for t in targets:
                    if isinstance(t, ast.Subscript) and ast.unparse(t.slice) != i_name:
                        raise NotImplementedError(f"{ast.unparse(t)} written by every row")
        views = {}
        rewrite = _Columns(self.arrays, self.varying | set(sums.values()), views)
        body = [rewrite.visit(_Rename(sums).visit(s)) for s in loop.body]
        lines = self.views(views, _stored(loop.body) - self.varying)
        n = ast.unparse(self.uniform(loop.iter.args[0]))
        i = ast.unparse(loop.target)
        if self.split_rows:
            return self.split_loop(body, lines, sums, i, n)
        if not sums:
            outer = ast.parse(f"for {i} in range({n}):\n    pass").body[0]
            outer.body = _over_columns(body, lines)
            return [outer]
        # each sum: blocks into a partial sum, the partial sums into it
        make = [ast.parse(f"{part} = np.zeros({WIDTH}, np.float64)").body[0]
                for name, part in sums.items()]
        if self.loop_names is not None and not set(sums) & self.made_in_loop:
            self.hoisted += make  # once, before the loop around
            make = []
        text = [f"for _b in range(0, {n}, {SUM_BLOCK}):"]
        text += [f"    for {K} in range({WIDTH}):\n        {part}[{K}] = 0"
                 for part in sums.values()]
        text += [f"    for {i} in range(_b, min(_b + {SUM_BLOCK}, {n})):", "        pass"]
        text += [f"    for {K} in range({WIDTH}):\n        {name}[{K}] += {part}[{K}]"
                 for name, part in sums.items()]
        blocks = ast.parse("\n".join(text)).body[0]
        inner = next(s for s in blocks.body if isinstance(s, ast.For)
                     and ast.unparse(s.target) == i)
        inner.body = _over_columns(body, lines)
        return [*make, blocks]

    @staticmethod
    def split_loop(body, lines, sums, i, n) -> list:
        """An element loop whose rows the threads share (``prange``), for the whole block of
        columns: each thread's sums add blocks of :data:`SUM_BLOCK` rows in float64 into a
        float64 row of its own, and these rows into the sums after the loop."""
        if not sums:
            outer = ast.parse(f"for {i} in prange({n}):\n    pass").body[0]
            outer.body = _over_columns(body, lines)
            return [outer]
        chunks = split_chunks()
        text = [f"_rows_{name} = np.zeros(({chunks}, {WIDTH}), np.float64)" for name in sums]
        text += [f"for _t in prange({chunks}):",
                 f"    _lo, _hi = _t * {n} // {chunks}, (_t + 1) * {n} // {chunks}"]
        text += [f"    {part} = np.zeros({WIDTH}, np.float64)" for part in sums.values()]
        text += [f"    for _b in range(_lo, _hi, {SUM_BLOCK}):"]
        text += [f"        for {K} in range({WIDTH}):\n            {part}[{K}] = 0"
                 for part in sums.values()]
        text += [f"        for {i} in range(_b, min(_b + {SUM_BLOCK}, _hi)):", "            pass"]
        text += [f"        for {K} in range({WIDTH}):\n"
                 f"            _rows_{name}[_t, {K}] += {part}[{K}]"
                 for name, part in sums.items()]
        text += [f"for _t in range({chunks}):"]
        text += [f"    for {K} in range({WIDTH}):\n        {name}[{K}] += _rows_{name}[_t, {K}]"
                 for name in sums]
        code = ast.parse("\n".join(text)).body
        split = next(s for s in code if isinstance(s, ast.For) and ast.unparse(s.target) == "_t")
        blocks = next(s for s in split.body if isinstance(s, ast.For))
        inner = next(s for s in blocks.body if isinstance(s, ast.For)
                     and ast.unparse(s.target) == i)
        inner.body = _over_columns(body, lines)
        return code


def split_chunks() -> int:
    """How many parts the rows of a split loop's sums come in: four for each of the threads
    Numba may start, a number written into the kernel's source (so its cache key holds it;
    ``numba.get_num_threads()`` in a kernel kept it from the disk cache)."""
    import numba

    return 4 * numba.config.NUMBA_NUM_THREADS


@functools.cache
def columns(fn, n_arrays=None, n_per_line=0, split_rows=False):
    """``fn(a..., p..., s...)``, a row function of ``n_arrays`` arrays (default: all its
    parameters), ``n_per_line`` values per line and scalars, as
    ``fn_columns(a..., p..., s..., [res,] j0, j1)`` over the columns ``j0:j1`` of 2-D
    C-contiguous planes ``a`` (length, inner), with ``p`` the vectors of one value per column
    (cast to ``F`` as a rows kernel casts them): what ``fn`` does to one line ``a[:, j]``, for
    every j of the block (see the module docstring); a value ``fn`` returns (its last
    statement) goes into ``res[j]``."""
    tree = _function(fn)
    params = [a.arg for a in tree.args.args]
    n_arrays = len(params) if n_arrays is None else n_arrays
    arrays, per_line = params[:n_arrays], params[n_arrays:n_arrays + n_per_line]
    body = _inline(tree.body, fn.__globals__, [0])
    returns = bool(body) and isinstance(body[-1], ast.Return)
    if returns:  # a value per line: set as a name, then stored into the result's columns
        body[-1] = ast.Assign([ast.Name(RESULT, ast.Store())], body[-1].value)
    rewrite = _Rewrite(set(arrays), _varying(body, set(arrays), set(per_line)), split_rows)
    rewrite.made.update(per_line)
    first = [ast.parse(f"{WIDTH} = {J1} - {J0}").body[0]]
    for p in per_line:  # the column's value, as the rows kernel's C(p[r])
        first += ast.parse(f"{p} = np.full({WIDTH}, F(_{p}[{J0}]))\n"
                           f"for {K} in range({WIDTH}):\n"
                           f"    {p}[{K}] = F(_{p}[{J0} + {K}])").body
    args = ", ".join([*arrays, *(f"_{p}" for p in per_line), *params[n_arrays + n_per_line:],
                      *(["_res"] if returns else []), J0, J1])
    definition = ast.parse(f"def {fn.__name__}_columns({args}):\n    pass")
    last = []
    if returns:
        value = f"{RESULT}[{K}]" if RESULT in rewrite.varying else RESULT
        last = ast.parse(f"_res_view = _res[{J0}:{J1}]\n"
                         f"for {K} in range({WIDTH}):\n    _res_view[{K}] = {value}").body
    definition.body[0].body = first + rewrite.block(body) + last
    source = ast.unparse(ast.fix_missing_locations(definition))
    glb = dict(fn.__globals__, np=np)
    if split_rows:
        import numba

        glb.update(prange=numba.prange)
    exec(compile(source, f"<{fn.__module__}.{fn.__name__} columns>", "exec"), glb)
    new = glb[f"{fn.__name__}_columns"]
    new.__module__ = fn.__module__
    new.__doc__ = f"{fn.__name__} on columns j0:j1 (fastgd.backends.columns).\n\n{source}"
    new.fastgd_source = source
    if hasattr(fn, "in_order"):
        new.in_order = fn.in_order
    return new
