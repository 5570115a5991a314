import numpy as np


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    # docs/derivations/conv.md, "col2im is the adjoint of im2col": fold (add back), then crop.
    n, c, h, w = input_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    z = cols.reshape(n, c, kh, kw, oh, ow)
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            for a in range(oh):
                for b in range(ow):
                    padded[:, :, a * sh + i * dh, b * sw + j * dw] += z[:, :, i, j, a, b]
    return padded[:, :, ph:ph + h, pw:pw + w]
