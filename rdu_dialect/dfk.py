"""The `dfk` dialect: fused dataflow kernels, their launches, and the pipelined kernel loop.

A `dfk.kernel` is what the chip runs as one configuration (its body is `llm` ops on static
`tensor<...>` values); a `dfk.call` is one launch of it. Kernel looping turns N consecutive
launches of the same kernel into one launch of a kernel whose body is a `dfk.loop`, with the
per-iteration operands stacked along a new leading dimension (`dfk.stack` / `dfk.slice`).

Everything here has value semantics: ops consume and produce SSA tensors, nothing aliases.

Type helpers shared with the passes:
- `stacked_type(t, n)`: `tensor<X>` -> `tensor<n x X>`;
- `slice_type(t)`: `tensor<n x X>` -> `tensor<X>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DictionaryAttr,
    FlatSymbolRefAttrConstr,
    FunctionType,
    IndexType,
    IntegerAttr,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    i64,
)
from xdsl.dialects.utils import (
    parse_assignment,
    parse_func_op_like,
    print_assignment,
    print_func_op_like,
)
from xdsl.ir import Attribute, Block, BlockArgument, Dialect, Operation, OpResult, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern
from xdsl.printer import Printer
from xdsl.traits import (
    CallableOpInterface,
    EffectInstance,
    HasAncestor,
    HasCanonicalizationPatternsTrait,
    HasParent,
    IsTerminator,
    MemoryEffect,
    MemoryEffectKind,
    Pure,
    RecursiveMemoryEffect,
    Resource,
    ReturnLike,
    SymbolOpInterface,
    SymbolUserOpInterface,
)
from xdsl.utils.exceptions import VerifyException

from rdu_compiler.rdu_dialect.ssa import IsolatedBody, NestedOpError, verify_dominance
from rdu_compiler.rdu_dialect.symbols import lookup_symbol
from rdu_compiler.rdu_dialect.tensors import tensor_shape, tensor_type


def stacked_type(t: TensorType, n: int) -> TensorType:
    """`tensor<X>` stacked n times: `tensor<n x X>` (same element type and encoding)."""
    return TensorType(t.element_type, (n, *t.get_shape()), t.encoding)


def slice_type(t: TensorType) -> TensorType:
    """One slice of a stacked `tensor<n x X>`: `tensor<X>`. `t` must have rank >= 1."""
    return TensorType(t.element_type, t.get_shape()[1:], t.encoding)


def _is_call(op: Operation) -> bool:
    """Whether `op` calls a symbol (`dfk.call`, `func.call`, or any op with a `callee`)."""
    callee = op.properties.get("callee", op.attributes.get("callee"))
    return isinstance(callee, SymbolRefAttr)


def _types(types: Sequence[Attribute]) -> str:
    return "(" + ", ".join(str(t) for t in types) + ")"


# --------------------------------------------------------------------------------------
# Kernels and launches
# --------------------------------------------------------------------------------------


class KernelCallableInterface(CallableOpInterface):
    @classmethod
    def get_callable_region(cls, op: Operation) -> Region:
        assert isinstance(op, KernelOp)
        return op.body

    @classmethod
    def get_argument_types(cls, op: Operation) -> tuple[Attribute, ...]:
        assert isinstance(op, KernelOp)
        return op.function_type.inputs.data

    @classmethod
    def get_result_types(cls, op: Operation) -> tuple[Attribute, ...]:
        assert isinstance(op, KernelOp)
        return op.function_type.outputs.data


_KERNEL_RESERVED = ("sym_name", "function_type", "sym_visibility", "arg_attrs", "res_attrs")


@irdl_op_definition
class KernelOp(IRDLOperation):
    """A fused dataflow kernel: `dfk.kernel @name(%a: T, ...) -> (R, ...) { ... }`.

    A kernel is what the chip runs as one configuration: its body (one block of `llm` ops,
    possibly a `dfk.loop`) is mapped onto units at once, and runs from its block arguments
    to the values of its `dfk.return`. Semantically it is a pure function of its arguments
    (value semantics; results never alias arguments in the IR, whatever buffers lowering
    reuses). It exists as its own op, not a `func.func`, because every call of a kernel is a
    synchronization boundary on the device (launch, argument load, pipeline fill and drain,
    sync): the unit of scheduling that kernel looping removes. Shaped like `func.func`
    (symbol, function type, optional visibility and argument/result attributes), isolated
    from above; a kernel always has a body.
    """

    name = "dfk.kernel"

    sym_name = prop_def(SymbolNameConstraint())
    function_type = prop_def(FunctionType)
    sym_visibility = opt_prop_def(StringAttr)
    arg_attrs = opt_prop_def(ArrayAttr[DictionaryAttr])
    res_attrs = opt_prop_def(ArrayAttr[DictionaryAttr])
    body = region_def("single_block")

    traits = traits_def(IsolatedBody(), SymbolOpInterface(), KernelCallableInterface())

    def __init__(
        self,
        name: str,
        function_type: FunctionType | tuple[Sequence[Attribute], Sequence[Attribute]],
        region: Region | None = None,
        visibility: str | StringAttr | None = None,
        *,
        arg_attrs: ArrayAttr[DictionaryAttr] | None = None,
        res_attrs: ArrayAttr[DictionaryAttr] | None = None,
    ):
        """A kernel; without `region`, an empty entry block with the input types as args."""
        if isinstance(function_type, tuple):
            function_type = FunctionType.from_lists(*function_type)
        if isinstance(visibility, str):
            visibility = StringAttr(visibility)
        if region is None:
            region = Region(Block(arg_types=function_type.inputs))
        super().__init__(
            properties={
                "sym_name": StringAttr(name),
                "function_type": function_type,
                "sym_visibility": visibility,
                "arg_attrs": arg_attrs,
                "res_attrs": res_attrs,
            },
            regions=[region],
        )

    @property
    def args(self) -> tuple[BlockArgument, ...]:
        """The kernel's arguments (entry block arguments)."""
        return self.body.block.args

    @property
    def return_op(self) -> ReturnOp:
        """The kernel's terminator (valid on verified IR)."""
        ret = self.body.block.last_op
        assert isinstance(ret, ReturnOp)
        return ret

    def verify_(self) -> None:
        inputs = self.function_type.inputs.data
        if self.body.block.arg_types != inputs:
            raise VerifyException(
                f"entry block argument types {_types(self.body.block.arg_types)} of kernel "
                f"@{self.sym_name.data} do not match its input types {_types(inputs)}"
            )
        if not isinstance(self.body.block.last_op, ReturnOp):
            raise VerifyException(f"body of kernel @{self.sym_name.data} must end with dfk.return")
        for op in self.body.walk():
            if _is_call(op):
                raise NestedOpError(
                    op,
                    f"calls are not allowed inside a kernel (in @{self.sym_name.data}): a "
                    "kernel is one chip configuration and cannot launch another",
                )
        verify_dominance(self)

    @classmethod
    def parse(cls, parser: Parser) -> KernelOp:
        visibility = parser.parse_optional_visibility_keyword()
        name, inputs, outputs, region, extra_attrs, arg_attrs, res_attrs = parse_func_op_like(
            parser, reserved_attr_names=_KERNEL_RESERVED
        )
        kernel = cls(
            name, (inputs, outputs), region, visibility, arg_attrs=arg_attrs, res_attrs=res_attrs
        )
        if extra_attrs is not None:
            kernel.attributes |= extra_attrs.data
        return kernel

    def print(self, printer: Printer):
        if self.sym_visibility:
            printer.print_string(f" {self.sym_visibility.data}")
        print_func_op_like(
            printer,
            self.sym_name,
            self.function_type,
            self.body,
            self.attributes,
            arg_attrs=self.arg_attrs,
            res_attrs=self.res_attrs,
            reserved_attr_names=_KERNEL_RESERVED,
        )


@irdl_op_definition
class ReturnOp(IRDLOperation):
    """`dfk.return %x, ... : R, ...`: terminator of a kernel; its operands are the kernel's
    results for this launch (types equal to the kernel's result types)."""

    name = "dfk.return"

    arguments = var_operand_def()

    traits = traits_def(HasParent(KernelOp), IsTerminator(), ReturnLike(), Pure())

    assembly_format = "attr-dict ($arguments^ `:` type($arguments))?"

    def __init__(self, *values: SSAValue | Operation):
        super().__init__(operands=[values])

    def verify_(self) -> None:
        kernel = self.parent_op()
        assert isinstance(kernel, KernelOp)
        expected = kernel.function_type.outputs.data
        if self.arguments.types != expected:
            raise VerifyException(
                f"dfk.return operand types {_types(self.arguments.types)} do not match the "
                f"result types {_types(expected)} of kernel @{kernel.sym_name.data}"
            )


@dataclass(frozen=True)
class KernelLaunchResource(Resource):
    """The device's configuration and launch queue, which every `dfk.call` goes through."""

    def name(self) -> str:
        return "dfk.launch"


class KernelLaunchEffect(MemoryEffect):
    """A launch reads and writes the device state (the launch resource, keyed by callee):
    calls are never erased, merged (CSE), or reordered against each other or against other
    effectful ops, although their tensor semantics are value-based."""

    @classmethod
    def get_effects(cls, op: Operation) -> frozenset[EffectInstance]:
        assert isinstance(op, CallOp)
        return frozenset(
            EffectInstance(kind, op.callee, KernelLaunchResource())
            for kind in (MemoryEffectKind.READ, MemoryEffectKind.WRITE)
        )


class CallSymbolUser(SymbolUserOpInterface):
    def verify(self, op: Operation) -> None:
        assert isinstance(op, CallOp)
        name = op.callee.string_value()
        kernel = lookup_symbol(op, name)
        if kernel is None:
            raise VerifyException(f"callee @{name} does not exist")
        if not isinstance(kernel, KernelOp):
            raise VerifyException(f"callee @{name} is a {kernel.name}, not a dfk.kernel")
        for what, actual, expected in (
            ("operand", op.arguments.types, kernel.function_type.inputs.data),
            ("result", op.res.types, kernel.function_type.outputs.data),
        ):
            if len(actual) != len(expected):
                raise VerifyException(
                    f"call to @{name} has {len(actual)} {what}(s), but the kernel has "
                    f"{len(expected)}"
                )
            for i, (a, e) in enumerate(zip(actual, expected)):
                if a != e:
                    raise VerifyException(
                        f"{what} #{i} of call to @{name} has type {a}, but the kernel's "
                        f"{what} #{i} has type {e}"
                    )


class CallCanonicalization(HasCanonicalizationPatternsTrait):
    """Kernel looping with the default options (`DEFAULT_OPTIONS` in
    `passes/kernel_looping.py`, imported lazily: the rewrite lives with the passes), so that
    `canonicalize` loops consecutive calls unless the module is marked
    `dfk.no_kernel_looping`. Local, as canonicalizations are: it adds the looped kernel but
    erases no symbol (symbol-dce's job)."""

    @classmethod
    def get_canonicalization_patterns(cls) -> tuple[RewritePattern, ...]:
        from rdu_compiler.passes.kernel_looping import LoopConsecutiveCalls

        return (LoopConsecutiveCalls(),)


@irdl_op_definition
class CallOp(IRDLOperation):
    """`dfk.call @k(%a, ...) : (T, ...) -> (R, ...)`: one launch of kernel `@k`.

    Its results are the values of `@k`'s `dfk.return` with the operands bound to `@k`'s
    arguments. Each call is a synchronization boundary on the device (launch, argument load,
    fill, drain, sync), so calls carry a launch effect (`KernelLaunchEffect`): passes must
    not erase, merge or reorder them freely. Kernel looping is the pass that rewrites them.
    """

    name = "dfk.call"

    arguments = var_operand_def()
    callee = prop_def(FlatSymbolRefAttrConstr)
    res = var_result_def()

    traits = traits_def(CallSymbolUser(), KernelLaunchEffect(), CallCanonicalization())

    assembly_format = "$callee `(` $arguments `)` attr-dict `:` functional-type($arguments, $res)"

    def __init__(
        self,
        callee: str | SymbolRefAttr,
        arguments: Sequence[SSAValue | Operation],
        result_types: Sequence[Attribute],
    ):
        if isinstance(callee, str):
            callee = SymbolRefAttr(callee)
        super().__init__(
            operands=[arguments], result_types=[result_types], properties={"callee": callee}
        )


# --------------------------------------------------------------------------------------
# The pipelined loop
# --------------------------------------------------------------------------------------


def _int(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def _parse_group(
    parser: Parser, keyword: str
) -> list[tuple[Parser.UnresolvedArgument, UnresolvedOperand, Attribute]]:
    """`keyword(%arg = %value : T, ...)`, if present (else an empty list)."""
    if parser.parse_optional_keyword(keyword) is None:
        return []

    def entry():
        arg, value = parse_assignment(parser)
        parser.parse_punctuation(":")
        start = parser.pos
        t = parser.parse_type()
        if keyword == "stacked" and (not isinstance(t, TensorType) or not t.get_shape()):
            parser.raise_error(
                f"stacked operand type must be a tensor with a leading dimension, got {t}",
                start,
                parser.pos,
            )
        return arg, value, t

    return parser.parse_comma_separated_list(Parser.Delimiter.PAREN, entry)


def _print_group(
    printer: Printer, keyword: str, args: Sequence[BlockArgument], values: Sequence[SSAValue]
):
    if not values:
        return

    def entry(pair: tuple[BlockArgument, SSAValue]):
        print_assignment(printer, *pair)
        printer.print_string(" : ")
        printer.print_attribute(pair[1].type)

    printer.print_string(f" {keyword}(")
    printer.print_list(zip(args, values), entry)
    printer.print_string(")")


@irdl_op_definition
class LoopOp(IRDLOperation):
    """The pipelined kernel loop: the hardware outer loop of a looped kernel.

    ```
    %r:3 = dfk.loop %i = 0 to 4 pipeline_depth 2
             carried(%x = %h : tensor<1x64xbf16>)
             invariant(%p = %pos : tensor<1xi32>)
             stacked(%w = %ws : tensor<4x64x64xbf16>) {
      ...
      dfk.yield carried(%xn : tensor<1x64xbf16>) stacked(%kn : tensor<1x2x16x8xbf16>)
    } -> (tensor<1x64xbf16>, tensor<4x1x2x16x8xbf16>)
    ```
    (printed on one line). Semantics, with N = `trip_count` (>= 1): for i = 0 .. N-1 the
    body runs with block arguments, in this order,
    - the induction variable `i : index`;
    - carried: the initial operand values at i = 0, then the yield's `carried` values of
      iteration i-1 (same types as the carried operands);
    - invariant: the invariant operands, the same values every iteration;
    - stacked: slice i of each stacked operand (a tensor whose leading dim is N; the block
      argument's type is the operand's without that leading dim).
    Results: the carried values yielded by the last iteration (same types as the carried
    operands), then for each yield `stacked` value, the N per-iteration values stacked along
    a new leading dim (result j = `stack(y_j of iteration 0, ..., iteration N-1)`).

    It exists so that N launches of one kernel become one launch: the loop runs on the device,
    and `pipeline_depth` d (>= 1, default 1, printed only when not 1) is how many consecutive
    iterations may be in flight at once: while iteration i computes, the stacked inputs
    (weights, cache slices) of iterations up to i+d-1 may stream in. d = 1: no overlap;
    d = 2: double buffering (the next layer's weights load while this layer runs). It is a
    schedule attribute only: it never changes the values computed. `trip_count` and
    `pipeline_depth` are properties; other (discardable) attributes print as
    `attributes {...}` before the region.

    Where it may be: inside a `dfk.kernel` (the hardware loop is part of one configuration),
    never nested in another `dfk.loop`. Its body is one block, not isolated from above (like
    `scf.for`): it may read a value of the enclosing kernel directly, the same value every
    trip (lowering maps a captured kernel argument as it maps an invariant operand); the
    operand groups are what passes produce.

    Python API (kernel looping, lowering and the interpreter rely on these):
    `trip_count`, `pipeline_depth` (ints; `*_attr` the IntegerAttrs); operand groups
    `carried`, `invariant`, `stacked`; body arguments `induction_var`, `carried_args`,
    `invariant_args`, `stacked_args`; `yield_op` (with groups `carried`, `stacked`);
    results `carried_results`, `stacked_results` (all of them: `res`);
    `LoopOp.body_arg_types(carried, invariant, stacked)` the body's block argument types.
    """

    name = "dfk.loop"

    trip_count_attr = prop_def(IntegerAttr[I64], prop_name="trip_count")
    pipeline_depth_attr = prop_def(IntegerAttr[I64], _int(1), prop_name="pipeline_depth")
    carried = var_operand_def()
    invariant = var_operand_def()
    stacked = var_operand_def(TensorType)
    res = var_result_def()
    body = region_def("single_block")

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(RecursiveMemoryEffect(), HasAncestor(KernelOp))

    def __init__(
        self,
        trip_count: int,
        carried: Sequence[SSAValue | Operation],
        invariant: Sequence[SSAValue | Operation],
        stacked: Sequence[SSAValue | Operation],
        body: Region | Block,
        result_types: Sequence[Attribute] | None = None,
        pipeline_depth: int = 1,
    ):
        """A loop over `body`, whose block arguments must have `body_arg_types(...)`.
        Without `result_types`, they are inferred from the body's `dfk.yield`."""
        if isinstance(body, Block):
            body = Region(body)
        if result_types is None:
            yielded = body.block.last_op
            assert isinstance(yielded, YieldOp), "dfk.loop body must end with dfk.yield"
            result_types = [
                *(SSAValue.get(v).type for v in carried),
                *(stacked_type(t, trip_count) for t in yielded.stacked_types),
            ]
        super().__init__(
            operands=[carried, invariant, stacked],
            result_types=[result_types],
            properties={
                "trip_count": _int(trip_count),
                "pipeline_depth": _int(pipeline_depth),
            },
            regions=[body],
        )

    @staticmethod
    def body_arg_types(
        carried: Sequence[SSAValue], invariant: Sequence[SSAValue], stacked: Sequence[SSAValue]
    ) -> tuple[Attribute, ...]:
        """Block argument types of a loop body over these operand groups: `index`, the
        carried and invariant types, then the slice type of each stacked operand. Build a
        body with `Block(arg_types=LoopOp.body_arg_types(carried, invariant, stacked))`."""
        return (
            IndexType(),
            *(v.type for v in (*carried, *invariant)),
            *(slice_type(tensor_type(v)) for v in stacked),
        )

    @property
    def trip_count(self) -> int:
        """N: the number of iterations (leading dim of every stacked operand and result)."""
        return self.trip_count_attr.value.data

    @property
    def pipeline_depth(self) -> int:
        """How many consecutive iterations may be in flight at once (>= 1)."""
        return self.pipeline_depth_attr.value.data

    @property
    def induction_var(self) -> BlockArgument:
        """The iteration number (`index`, 0 .. N-1)."""
        return self.body.block.args[0]

    def _args(self, start: int, count: int) -> tuple[BlockArgument, ...]:
        return self.body.block.args[1 + start : 1 + start + count]

    @property
    def carried_args(self) -> tuple[BlockArgument, ...]:
        """Body arguments holding this iteration's carried values."""
        return self._args(0, len(self.carried))

    @property
    def invariant_args(self) -> tuple[BlockArgument, ...]:
        """Body arguments holding the invariant values."""
        return self._args(len(self.carried), len(self.invariant))

    @property
    def stacked_args(self) -> tuple[BlockArgument, ...]:
        """Body arguments holding this iteration's slice of each stacked operand."""
        return self._args(len(self.carried) + len(self.invariant), len(self.stacked))

    @property
    def yield_op(self) -> YieldOp:
        """The body's terminator (valid on verified IR)."""
        yielded = self.body.block.last_op
        assert isinstance(yielded, YieldOp)
        return yielded

    @property
    def carried_results(self) -> tuple[OpResult, ...]:
        """The carried values after the last iteration."""
        return tuple(self.res[: len(self.carried)])

    @property
    def stacked_results(self) -> tuple[OpResult, ...]:
        """The stacked outputs: each yield `stacked` value over all iterations."""
        return tuple(self.res[len(self.carried) :])

    def verify_(self) -> None:
        outer = self.parent_op()
        while not isinstance(outer, KernelOp | None):
            if isinstance(outer, LoopOp):
                raise VerifyException("dfk.loop cannot be nested in another dfk.loop")
            outer = outer.parent_op()
        n = self.trip_count
        if n < 1:
            raise VerifyException(f"dfk.loop trip count must be >= 1, got {n}")
        if self.pipeline_depth < 1:
            raise VerifyException(
                f"dfk.loop pipeline_depth must be >= 1, got {self.pipeline_depth}"
            )
        for i, t in enumerate(self.stacked.types):
            dims = tensor_shape(t)
            if not dims or dims[0] != n:
                lead = dims[0] if dims else "none (rank 0)"
                raise VerifyException(
                    f"dfk.loop stacked operand #{i} ({t}) has leading dimension {lead}, "
                    f"but the trip count is {n}"
                )

        block = self.body.block
        expected_args = self.body_arg_types(self.carried, self.invariant, self.stacked)
        if block.arg_types != expected_args:
            raise VerifyException(
                f"dfk.loop body argument types {_types(block.arg_types)} do not match the "
                f"expected {_types(expected_args)} (index, carried, invariant, stacked slices)"
            )

        yielded = block.last_op
        if not isinstance(yielded, YieldOp):
            raise VerifyException("dfk.loop body must end with dfk.yield")
        if yielded.carried.types != self.carried.types:
            raise VerifyException(
                f"dfk.yield carried types {_types(yielded.carried.types)} do not match the "
                f"loop's carried types {_types(self.carried.types)}"
            )

        expected_results = (
            *self.carried.types,
            *(stacked_type(t, n) for t in yielded.stacked_types),
        )
        if self.res.types != expected_results:
            raise VerifyException(
                f"dfk.loop result types {_types(self.res.types)} do not match the expected "
                f"{_types(expected_results)} (carried types, then {n} x each yielded "
                "stacked type)"
            )

    @classmethod
    def parse(cls, parser: Parser) -> LoopOp:
        indvar = parser.parse_argument(expect_type=False)
        parser.parse_punctuation("=")
        start = parser.pos
        if parser.parse_integer() != 0:
            parser.raise_error("dfk.loop always counts from 0", start, parser.pos)
        parser.parse_keyword("to")
        trip_count = parser.parse_integer()
        pipeline_depth = 1
        if parser.parse_optional_keyword("pipeline_depth") is not None:
            pipeline_depth = parser.parse_integer()

        groups = [_parse_group(parser, kw) for kw in ("carried", "invariant", "stacked")]
        carried, invariant, stacked = (
            [parser.resolve_operand(value, t) for _, value, t in group] for group in groups
        )
        arg_types = cls.body_arg_types(carried, invariant, stacked)
        unresolved = [indvar, *(arg for group in groups for arg, _, _ in group)]
        args = [arg.resolve(t) for arg, t in zip(unresolved, arg_types)]

        attrs = parser.parse_optional_attr_dict_with_keyword()
        body = parser.parse_region(args)
        result_types: list[Attribute] = []
        if parser.parse_optional_punctuation("->") is not None:
            result_types = parser.parse_comma_separated_list(
                Parser.Delimiter.PAREN, parser.parse_type
            )
        loop = cls(trip_count, carried, invariant, stacked, body, result_types, pipeline_depth)
        if attrs is not None:
            loop.attributes |= attrs.data
        return loop

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_ssa_value(self.induction_var)
        printer.print_string(f" = 0 to {self.trip_count}")
        if self.pipeline_depth != 1:
            printer.print_string(f" pipeline_depth {self.pipeline_depth}")
        _print_group(printer, "carried", self.carried_args, self.carried)
        _print_group(printer, "invariant", self.invariant_args, self.invariant)
        _print_group(printer, "stacked", self.stacked_args, self.stacked)
        printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False)
        if self.res:
            printer.print_string(" -> (")
            printer.print_list(self.res.types, printer.print_attribute)
            printer.print_string(")")


@irdl_op_definition
class YieldOp(IRDLOperation):
    """`dfk.yield carried(%x : T, ...) stacked(%y : S, ...)`: terminator of a `dfk.loop`
    body. `carried`: the next iteration's carried values (the loop's carried types);
    `stacked`: this iteration's slice of each stacked output (any tensor types; the loop's
    stacked result j is `N x` the type of value j). Either group may be empty (omitted)."""

    name = "dfk.yield"

    carried = var_operand_def()
    stacked = var_operand_def(TensorType)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(HasParent(LoopOp), IsTerminator(), ReturnLike(), Pure())

    assembly_format = (
        "(`carried` `(` $carried^ `:` type($carried) `)`)? "
        "(`stacked` `(` $stacked^ `:` type($stacked) `)`)? attr-dict"
    )

    def __init__(
        self,
        carried: Sequence[SSAValue | Operation] = (),
        stacked: Sequence[SSAValue | Operation] = (),
    ):
        super().__init__(operands=[carried, stacked])

    @property
    def stacked_types(self) -> tuple[TensorType, ...]:
        """Types of the stacked slices: tensors, as the `stacked` operand constraint verifies
        (nested ops verify before the enclosing loop's `verify_`)."""
        return tuple(tensor_type(t) for t in self.stacked.types)


# --------------------------------------------------------------------------------------
# Stacked values
# --------------------------------------------------------------------------------------


class StackCanonicalization(HasCanonicalizationPatternsTrait):
    @classmethod
    def get_canonicalization_patterns(cls) -> tuple[RewritePattern, ...]:
        return (StackOfSlices(),)


class SliceCanonicalization(HasCanonicalizationPatternsTrait):
    @classmethod
    def get_canonicalization_patterns(cls) -> tuple[RewritePattern, ...]:
        return (SliceOfStack(),)


@irdl_op_definition
class StackOp(IRDLOperation):
    """`dfk.stack %a_0, ..., %a_N-1 : tensor<X> -> tensor<N x X>`: the N values (all of one
    type, N >= 1) stacked along a new leading dimension; slice i of the result is `a_i`.
    It builds a stacked operand of a `dfk.loop` (or of a looped kernel's call) from
    per-iteration values."""

    name = "dfk.stack"

    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)

    traits = traits_def(Pure(), StackCanonicalization())

    def __init__(self, inputs: Sequence[SSAValue | Operation]):
        """Stacks `inputs` (at least one, all of one tensor type)."""
        element = tensor_type(SSAValue.get(inputs[0]))
        super().__init__(operands=[inputs], result_types=[stacked_type(element, len(inputs))])

    def verify_(self) -> None:
        if not self.inputs:
            raise VerifyException("dfk.stack needs at least one operand")
        first = self.inputs.types[0]
        for i, t in enumerate(self.inputs.types):
            if t != first:
                raise VerifyException(
                    f"dfk.stack operand #{i} has type {t}, but operand #0 has type {first}: "
                    "all stacked values must have the same type"
                )
        expected = stacked_type(tensor_type(first), len(self.inputs))
        if self.result.type != expected:
            raise VerifyException(
                f"dfk.stack result type {self.result.type} does not match {expected} "
                f"({len(self.inputs)} x the operand type)"
            )

    @classmethod
    def parse(cls, parser: Parser) -> StackOp:
        values = parser.parse_comma_separated_list(
            Parser.Delimiter.NONE, parser.parse_unresolved_operand
        )
        parser.parse_punctuation(":")
        element = parser.parse_type()
        parser.parse_punctuation("->")
        result = parser.parse_type()
        attrs = parser.parse_optional_attr_dict()
        return cls.create(
            operands=parser.resolve_operands(values, [element] * len(values), parser.pos),
            result_types=[result],
            attributes=attrs,
        )

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(" : ")
        printer.print_attribute(self.inputs.types[0])
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)
        printer.print_op_attributes(self.attributes)


@irdl_op_definition
class SliceOp(IRDLOperation):
    """`dfk.slice %s[i] : tensor<N x X> -> tensor<X>`: slice i (static, 0 <= i < N) of a
    stacked value along its leading dimension, i.e. numpy `s[i]`. It takes a stacked value
    apart outside a loop (inside, the loop's block arguments are the slices)."""

    name = "dfk.slice"

    source = operand_def(TensorType)
    index_attr = prop_def(IntegerAttr[I64], prop_name="index")
    result = result_def(TensorType)

    traits = traits_def(Pure(), SliceCanonicalization())

    assembly_format = "$source `[` $index `]` attr-dict `:` type($source) `->` type($result)"

    def __init__(self, source: SSAValue | Operation, index: int):
        source_type = tensor_type(SSAValue.get(source))
        super().__init__(
            operands=[source],
            result_types=[slice_type(source_type)],
            properties={"index": _int(index)},
        )

    @property
    def index(self) -> int:
        """Which slice (0-based)."""
        return self.index_attr.value.data

    def verify_(self) -> None:
        source = tensor_type(self.source)
        dims = source.get_shape()
        if not dims:
            raise VerifyException(f"dfk.slice source {source} has no leading dimension")
        if not 0 <= self.index < dims[0]:
            raise VerifyException(
                f"dfk.slice index {self.index} is out of range for the leading dimension "
                f"{dims[0]} of {source}"
            )
        expected = slice_type(source)
        if self.result.type != expected:
            raise VerifyException(
                f"dfk.slice result type {self.result.type} does not match {expected} "
                f"(the source type without its leading dimension)"
            )


class StackOfSlices(RewritePattern):
    """`dfk.stack(dfk.slice(x, 0), ..., dfk.slice(x, N-1))` -> `x` (N = x's leading dim)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: StackOp, rewriter: PatternRewriter):
        sources = set[SSAValue]()
        for i, value in enumerate(op.inputs):
            piece = value.owner
            if not isinstance(piece, SliceOp) or piece.index != i:
                return
            sources.add(piece.source)
        if len(sources) == 1 and (source := sources.pop()).type == op.result.type:
            rewriter.replace(op, [], [source])


class SliceOfStack(RewritePattern):
    """`dfk.slice(dfk.stack(a_0, ..., a_N-1), i)` -> `a_i`."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: SliceOp, rewriter: PatternRewriter):
        stack = op.source.owner
        if isinstance(stack, StackOp):
            rewriter.replace(op, [], [stack.inputs[op.index]])


DFK = Dialect(
    "dfk",
    [KernelOp, ReturnOp, CallOp, LoopOp, YieldOp, StackOp, SliceOp],
    [],
)
