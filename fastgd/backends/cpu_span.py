"""A parallel loop that calls an op's serial kernel by address: one loop serves every op.

A parallel ``map`` of the Numba CPU backend runs the op's serial kernel (its ``span``) on
pieces of the arrays (``codegen``: chunks, streamed chunks, pieces of rows). Called by name,
the span is linked into each loop's machine code and optimized again there, so every op
compiled a parallel loop of its own, the costliest part of a first call: 0.4-0.9 s each on
the 2-core Zen 3 VM, against 0.15-0.4 for the serial kernel. Called here by its address
instead (:func:`call_at`), the loop depends only on its shape: the number of arrays and
scalars and the dtypes, which ops share, and it runs the span's own machine code, so a
parallel call gives the serial kernel's bits.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import from_dtype, types
from numba.core import cgutils
from numba.extending import intrinsic


def _span_type(t):
    """The type ``t`` is passed as: a 1-D C-contiguous array, writable and aligned, for every
    such view (one machine representation: read-only views go to the span compiled for
    writable arrays, and what alignment it assumes is :meth:`SpanKernel.address`'s
    choice); other values as they are."""
    if isinstance(t, types.Array):
        if t.ndim != 1 or t.layout != "C":
            raise TypeError(f"call_at passes 1-D C-contiguous views only, got {t}")
        return types.Array(t.dtype, 1, "C")
    return t


@intrinsic
def call_at(typingctx, address, args):
    """Call the Numba function compiled at ``address`` (its native entry point, as
    :meth:`SpanKernel.address` finds it) with the values of tuple ``args``, 1-D
    C-contiguous arrays passed as :func:`_span_type`; it returns nothing."""
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    try:
        span_types = tuple(_span_type(t) for t in args.types)
    except TypeError as e:
        raise types.errors.TypingError(str(e)) from None

    def codegen(context, builder, sig, llargs):
        for given, wanted in zip(args.types, span_types):
            assert context.get_value_type(given) == context.get_value_type(wanted)
        fnty = context.call_conv.get_function_type(types.none, span_types)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = [builder.extract_value(llargs[1], k) for k in range(len(span_types))]
        status, _ = context.call_conv.call_function(builder, fn, types.none, span_types, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(address, args), codegen


class SpanKernel:
    """A parallel loop (``driver``, whose first argument is the span's address) bound to the
    serial kernel ``span`` it runs on pieces: called as the loop's other arguments, it passes
    the address of the span compiled for their dtypes (compiled, or loaded from the kernel
    cache, on the first call with them). That costs about 1 µs of Python a call, on arrays
    past the parallel threshold only (sigmoid of 2^13 float32 took 8.4-9.2 µs so, 7.2-7.6
    with the loop called directly, Zen 3 VM); :meth:`bound` finds the address once."""

    __slots__ = ("driver", "span", "_addresses")

    def __init__(self, driver, span):
        self.driver, self.span = driver, span
        self._addresses = {}

    def __call__(self, *args):
        key = tuple([a.dtype for a in args])
        address = self._addresses.get(key)
        if address is None:
            if not all(isinstance(a, np.ndarray) for a in args):
                raise TypeError("a SpanKernel takes arrays only (its scalars packed in one)")
            address = self.address(key)
        self.driver(address, *args)

    def bound(self, dtypes: tuple):
        """The loop bound to the span's address for arguments of ``dtypes`` only (a caller
        that keeps the kernel per dtype, as an activation's plan does: no key to find per
        call, about 1 µs)."""
        return functools.partial(self.driver, self.address(tuple(dtypes)))

    def address(self, dtypes: tuple) -> int:
        """The native entry point of the span compiled for the pieces of arrays of these
        dtypes: 1-D C-contiguous arrays (whatever their dimensions: a ``map_rows`` loop's
        pieces of 2-D arrays are 1-D), aligned as the serial path's arrays are typed (one
        compile serves both): Numba's flag only sets the alignment LLVM is told for element
        loads, and for an unaligned array of elu's backward or relu the x86-64 code was the
        same instruction for instruction."""
        address = self._addresses.get(dtypes)
        if address is not None:
            return address
        sig = tuple(types.Array(from_dtype(d), 1, "C") for d in dtypes)
        self.span.compile(sig)
        cres = self.span.overloads[sig]
        address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        self._addresses[dtypes] = address
        return address

    @property
    def overloads(self) -> dict:
        """The compiled versions of the loop and of the span (what a first call may add)."""
        return {**self.driver.overloads, **self.span.overloads}
