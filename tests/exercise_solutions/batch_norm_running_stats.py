def batch_norm_running_stats(x, running_mean, running_var, momentum):
    # docs/derivations/batchnorm.md, "Running statistics": momentum weights the new batch,
    # and the tracked variance is the unbiased one.
    axes = (0, *range(2, x.ndim))
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    unbiased = x.var(axis=axes) * m / (m - 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * unbiased)
