from methods.registry import Method


class SFT(Method):
    id = "sft"
    description = "supervised fine-tuning on the gold answers"
    trains = True

    def build_targets(self, ctx):
        return [ctx.target(ex, ctx.gold(ex)) for ex in ctx.examples]
