DESCRIPTION = "no training: the instruct model as it is (the reference row of every table)"
TRAINS = False


def build_targets(ctx):
    return []
