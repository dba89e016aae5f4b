DESCRIPTION = "self-only / RFT: train only on own answers the judge accepts (the training set shrinks)"
TRAINS = True


def build_targets(ctx):
    predictions = ctx.predictions(ctx.examples)
    return [ctx.target(ex, pred) for ex, pred in zip(ctx.examples, predictions) if pred.accepted]
