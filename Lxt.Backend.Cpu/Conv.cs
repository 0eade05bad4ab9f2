// 2-D convolution (NCHW input, OIHW weight) and its two gradients, as im2col / col2im around one GEMM per image.
// The ViT patch embedding (stride = kernel, no padding) is the case that matters; any stride and padding work.
using System.Buffers;

namespace Lxt.Backend.Cpu;

internal static class Conv
{
    readonly record struct Geometry(int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
    {
        public int Rows => C * KH * KW;   // rows of the column matrix
        public int Cols => OH * OW;       // columns: one per output pixel
    }

    static Geometry Of(int[] x, int[] w, int oh, int ow, Tuple<int, int> stride, Tuple<int, int> padding) =>
        new(x[1], x[2], x[3], w[2], w[3], stride.Item1, stride.Item2, padding.Item1, padding.Item2, oh, ow);

    // cols[(c,ky,kx), (oy,ox)] = x[c, oy*sh - ph + ky, ox*sw - pw + kx], 0 outside the image
    static void Im2Col(in Geometry g, ReadOnlySpan<float> x, Span<float> cols)
    {
        for (int c = 0; c < g.C; c++)
            for (int ky = 0; ky < g.KH; ky++)
                for (int kx = 0; kx < g.KW; kx++)
                {
                    var row = cols.Slice(((c * g.KH + ky) * g.KW + kx) * g.Cols, g.Cols);
                    for (int oy = 0; oy < g.OH; oy++)
                    {
                        int iy = oy * g.SH - g.PH + ky;
                        var dst = row.Slice(oy * g.OW, g.OW);
                        if (iy < 0 || iy >= g.H) { dst.Clear(); continue; }
                        var src = x.Slice((c * g.H + iy) * g.W, g.W);
                        for (int ox = 0; ox < g.OW; ox++)
                        {
                            int ix = ox * g.SW - g.PW + kx;
                            dst[ox] = ix >= 0 && ix < g.W ? src[ix] : 0f;
                        }
                    }
                }
    }

    // the adjoint of Im2Col: x[c, iy, ix] += cols[(c,ky,kx), (oy,ox)]
    static void Col2Im(in Geometry g, ReadOnlySpan<float> cols, Span<float> x)
    {
        for (int c = 0; c < g.C; c++)
            for (int ky = 0; ky < g.KH; ky++)
                for (int kx = 0; kx < g.KW; kx++)
                {
                    var row = cols.Slice(((c * g.KH + ky) * g.KW + kx) * g.Cols, g.Cols);
                    for (int oy = 0; oy < g.OH; oy++)
                    {
                        int iy = oy * g.SH - g.PH + ky;
                        if (iy < 0 || iy >= g.H) continue;
                        var dst = x.Slice((c * g.H + iy) * g.W, g.W);
                        var src = row.Slice(oy * g.OW, g.OW);
                        for (int ox = 0; ox < g.OW; ox++)
                        {
                            int ix = ox * g.SW - g.PW + kx;
                            if (ix >= 0 && ix < g.W) dst[ix] += src[ox];
                        }
                    }
                }
    }

    public static void Forward(Tuple<int, int> stride, Tuple<int, int> padding, int[] xShape, float[] x, int[] wShape, float[] w,
                               int[] outShape, float[] y, int threads)
    {
        var g = Of(xShape, wShape, outShape[2], outShape[3], stride, padding);
        int batch = xShape[0], o = wShape[0];
        var cols = ArrayPool<float>.Shared.Rent(Math.Max(1, g.Rows * g.Cols));
        try
        {
            for (int b = 0; b < batch; b++)
            {
                Im2Col(g, x.AsSpan(b * g.C * g.H * g.W, g.C * g.H * g.W), cols);
                Kernels.Gemm(false, false, o, g.Cols, g.Rows, w.AsSpan(0, o * g.Rows), g.Rows, cols.AsSpan(0, g.Rows * g.Cols), g.Cols,
                             y.AsSpan(b * o * g.Cols, o * g.Cols), g.Cols, false, threads);
            }
        }
        finally { ArrayPool<float>.Shared.Return(cols); }
    }

    public static void GradInput(Tuple<int, int> stride, Tuple<int, int> padding, int[] gShape, float[] grad, int[] wShape, float[] w,
                                 int[] outShape, float[] y, int threads)
    {
        var g = Of(outShape, wShape, gShape[2], gShape[3], stride, padding);
        int batch = outShape[0], o = wShape[0], image = g.C * g.H * g.W;
        y.AsSpan(0, batch * image).Clear();
        var cols = ArrayPool<float>.Shared.Rent(Math.Max(1, g.Rows * g.Cols));
        try
        {
            for (int b = 0; b < batch; b++)
            {
                // cols = Wᵀ (rows × o) · grad_b (o × cols)
                Kernels.Gemm(true, false, g.Rows, g.Cols, o, w.AsSpan(0, o * g.Rows), g.Rows, grad.AsSpan(b * o * g.Cols, o * g.Cols), g.Cols,
                             cols.AsSpan(0, g.Rows * g.Cols), g.Cols, false, threads);
                Col2Im(g, cols, y.AsSpan(b * image, image));
            }
        }
        finally { ArrayPool<float>.Shared.Return(cols); }
    }

    public static void GradWeight(Tuple<int, int> stride, Tuple<int, int> padding, int[] xShape, float[] x, int[] gShape, float[] grad,
                                  int[] outShape, float[] y, int threads)
    {
        var g = Of(xShape, outShape, gShape[2], gShape[3], stride, padding);
        int batch = xShape[0], o = outShape[0], image = g.C * g.H * g.W;
        if (batch == 0) { y.AsSpan(0, o * g.Rows).Clear(); return; }
        var cols = ArrayPool<float>.Shared.Rent(Math.Max(1, g.Rows * g.Cols));
        try
        {
            for (int b = 0; b < batch; b++)
            {
                // dW (o × rows) += grad_b (o × cols) · colsᵀ (cols × rows)
                Im2Col(g, x.AsSpan(b * image, image), cols);
                Kernels.Gemm(false, true, o, g.Rows, g.Cols, grad.AsSpan(b * o * g.Cols, o * g.Cols), g.Cols, cols.AsSpan(0, g.Rows * g.Cols), g.Cols,
                             y.AsSpan(0, o * g.Rows), g.Rows, b > 0, threads);
            }
        }
        finally { ArrayPool<float>.Shared.Return(cols); }
    }
}
