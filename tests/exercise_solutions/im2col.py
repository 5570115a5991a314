import numpy as np


def im2col(x, kernel_size, stride, padding, dilation):
    # docs/derivations/conv.md, "im2col": X[(c kH + i) kW + j, a oW + b] = x_pad[c, a sH + i dH, b sW + j dW]
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.zeros((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            for a in range(oh):
                for b in range(ow):
                    cols[:, :, i, j, a, b] = xp[:, :, a * sh + i * dh, b * sw + j * dw]
    return cols.reshape(n, c * kh * kw, oh * ow)
