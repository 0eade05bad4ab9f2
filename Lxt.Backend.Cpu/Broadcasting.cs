// Broadcast iteration shared by elementwise ops: the output viewed as rows of a contiguous inner run, where each
// operand is either contiguous along the run or constant over it (a scalar per row).
using Lxt.Graph;

namespace Lxt.Backend.Cpu;

internal sealed class BroadcastLayout
{
    /// Number of rows and length of each row; Rows * Inner = numel of the output.
    public readonly int Rows, Inner;
    /// Per operand: true when it advances with the inner run, false when one value covers the whole row.
    public readonly bool[] InnerContiguous;
    readonly int[] outerDims;
    readonly int[][] outerStrides;

    public BroadcastLayout(int[] outShape, params int[][] operandShapes)
    {
        int ops = operandShapes.Length;
        var strides = operandShapes.Select(s => Kernels.BroadcastStrides(s, outShape)).ToArray();
        // drop size-1 axes, then merge neighbours that every operand walks through as one run
        var dims = new List<int>();
        var st = new List<int[]>();
        for (int i = 0; i < outShape.Length; i++)
        {
            if (outShape[i] == 1) continue;
            var s = new int[ops];
            for (int o = 0; o < ops; o++) s[o] = strides[o][i];
            if (dims.Count > 0)
            {
                int last = dims.Count - 1;
                bool merge = true;
                for (int o = 0; o < ops && merge; o++) merge = st[last][o] == s[o] * outShape[i];
                if (merge)
                {
                    dims[last] *= outShape[i];
                    st[last] = s;
                    continue;
                }
            }
            dims.Add(outShape[i]);
            st.Add(s);
        }
        InnerContiguous = new bool[ops];
        if (dims.Count == 0)
        {
            Rows = 1; Inner = 1;
            Array.Fill(InnerContiguous, true);
            outerDims = [];
            outerStrides = new int[ops][];
            for (int o = 0; o < ops; o++) outerStrides[o] = [];
            return;
        }
        Inner = dims[^1];
        for (int o = 0; o < ops; o++) InnerContiguous[o] = st[^1][o] != 0;
        outerDims = dims.Take(dims.Count - 1).ToArray();
        outerStrides = new int[ops][];
        for (int o = 0; o < ops; o++) outerStrides[o] = st.Take(dims.Count - 1).Select(s => s[o]).ToArray();
        Rows = ShapeModule.numel(outerDims);
    }

    /// Offset of each operand at the start of `row`.
    public void Offsets(int row, Span<int> offsets)
    {
        offsets.Clear();
        for (int d = outerDims.Length - 1; d >= 0; d--)
        {
            int i = row % outerDims[d];
            row /= outerDims[d];
            for (int o = 0; o < offsets.Length; o++) offsets[o] += i * outerStrides[o][d];
        }
    }

    /// Runs body(row, innerStart, innerLength) over the output, split over threads when the work is large;
    /// short outputs with few rows are split along the inner run so both cores still help.
    public void ForEachRow(int threads, long costPerElement, Action<int, int, int> body)
    {
        int pieces = 1;
        if (Rows < threads) pieces = Math.Max(1, Math.Min(threads * 2, Inner / 16384));
        int rows = Rows, inner = Inner;
        Kernels.For(Rows * pieces, (long)Inner / pieces * costPerElement, threads, (s, e) =>
        {
            for (int item = s; item < e; item++)
            {
                int row = item / pieces, piece = item % pieces;
                int a = (int)((long)inner * piece / pieces), b = (int)((long)inner * (piece + 1) / pieces);
                body(row, a, b - a);
            }
        });
    }
}
