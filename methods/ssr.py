DESCRIPTION = "Selective Self-Rehearsal (Gupta et al. 2024): own answer if the judge accepts it, else gold"
TRAINS = True


def build_targets(ctx):
    predictions = ctx.predictions(ctx.examples)
    return [ctx.target(ex, pred if pred.accepted else ctx.gold(ex)) for ex, pred in zip(ctx.examples, predictions)]
