from methods.registry import Method


class SSR(Method):
    id = "ssr"
    description = "Selective Self-Rehearsal (Gupta et al. 2024): own answer if the judge accepts it, else gold"
    trains = True

    def build_targets(self, ctx):
        predictions = ctx.predictions(ctx.examples)
        return [ctx.target(ex, pred if pred.accepted else ctx.gold(ex)) for ex, pred in zip(ctx.examples, predictions)]
