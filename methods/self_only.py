from methods.registry import Method


class SelfOnly(Method):
    id = "self_only"
    description = "self-only / RFT: train only on own answers the judge accepts (the training set shrinks)"
    trains = True

    def build_targets(self, ctx):
        predictions = ctx.predictions(ctx.examples)
        return [ctx.target(ex, pred) for ex, pred in zip(ctx.examples, predictions) if pred.accepted]
