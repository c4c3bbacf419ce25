"""`rdu-opt`: xdsl-opt with rdu-compiler's dialects, passes and targets."""

from collections.abc import Sequence

from xdsl.xdsl_opt_main import xDSLOptMain

from tools.universe import DIALECTS, PASSES, TARGETS


class RduOptMain(xDSLOptMain):
    """xDSL's opt driver, with every upstream dialect and pass plus ours."""

    def register_all_dialects(self):
        super().register_all_dialects()
        for name, factory in DIALECTS.items():
            if name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(name, factory)

    def register_all_passes(self):
        super().register_all_passes()
        for name, factory in PASSES.items():
            self.available_passes.setdefault(name, factory)

    def register_all_targets(self):
        super().register_all_targets()
        for name, factory in TARGETS.items():
            self.available_targets.setdefault(name, factory)


def main(args: Sequence[str] | None = None) -> int:
    RduOptMain(args=args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
