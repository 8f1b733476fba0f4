// SPDX-License-Identifier: MIT
using CsCheck;
using Ovpn.Protocol.Data;

namespace Ovpn.Protocol.Tests.Data;

public class ReplayWindowTests
{
    [Fact]
    public void Zero_value_accepts_one_and_rejects_zero()
    {
        var w = new ReplayWindow();
        Assert.False(w.Check(0));
        Assert.False(w.CheckAndUpdate(0));
        Assert.True(w.Check(1));
        Assert.True(w.CheckAndUpdate(1));
        Assert.False(w.CheckAndUpdate(1));
        Assert.Equal(1u, w.Highest);
    }

    [Fact]
    public void Check_does_not_update()
    {
        var w = new ReplayWindow();
        Assert.True(w.Check(5));
        Assert.True(w.Check(5));
        w.Update(5);
        Assert.False(w.Check(5));
        Assert.True(w.Check(4));
    }

    [Fact]
    public void Window_edges()
    {
        var w = new ReplayWindow();
        Assert.True(w.CheckAndUpdate(100));
        Assert.True(w.Check(100 - 63));   // oldest id still inside the 64-packet window
        Assert.False(w.Check(100 - 64));  // just outside
        Assert.True(w.CheckAndUpdate(37));
        Assert.False(w.Check(37));
        Assert.True(w.CheckAndUpdate(200)); // jump beyond the window clears the bitmap
        Assert.False(w.Check(100));
        Assert.True(w.Check(199));
        Assert.True(w.CheckAndUpdate(uint.MaxValue));
        Assert.False(w.Check(uint.MaxValue));
    }

    [Fact]
    public void Update_ignores_ids_too_old()
    {
        var w = new ReplayWindow();
        w.Update(1000);
        w.Update(10); // outside the window: no effect, no exception
        Assert.Equal(1000u, w.Highest);
        Assert.False(w.Check(10));
    }

    // Model: accept iff id != 0, not seen before, and id > max - 64 (max = highest accepted so far).
    private static bool ModelAccept(HashSet<uint> seen, uint max, uint id) =>
        id != 0 && !seen.Contains(id) && (id > max || max - id < 64);

    [Fact]
    public void Matches_a_set_model_under_random_orders()
    {
        Gen.UInt[1, 300].Array[1, 400].Sample(ids =>
        {
            var w = new ReplayWindow();
            var seen = new HashSet<uint>();
            uint max = 0;
            foreach (var id in ids)
            {
                bool expected = ModelAccept(seen, max, id);
                if (w.CheckAndUpdate(id) != expected)
                {
                    return false;
                }

                if (expected)
                {
                    seen.Add(id);
                    max = Math.Max(max, id);
                }
            }

            return true;
        }, iter: 2000);
    }

    [Fact]
    public void Shuffled_sequence_within_window_is_fully_accepted_once()
    {
        // Any permutation of 1..N where each id arrives at most 63 positions "late" relative to
        // the highest id is accepted exactly once; duplicates are then all rejected.
        Gen.Int[1, 1000].Sample(seed =>
        {
            var rnd = new Random(seed);
            var ids = Enumerable.Range(1, 500).Select(i => (uint)i).ToArray();
            // Local shuffle inside blocks of 32 keeps every id within the window.
            for (int b = 0; b < ids.Length; b += 32)
            {
                int len = Math.Min(32, ids.Length - b);
                rnd.Shuffle(ids.AsSpan(b, len));
            }

            var w = new ReplayWindow();
            foreach (var id in ids)
            {
                if (!w.CheckAndUpdate(id))
                {
                    return false;
                }
            }

            foreach (var id in ids.Skip(ids.Length - 64))
            {
                if (w.Check(id))
                {
                    return false;
                }
            }

            return true;
        }, iter: 200);
    }
}
