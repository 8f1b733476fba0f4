// SPDX-License-Identifier: MIT
using System.Net;
using Ovpn.ControlPlane.Sessions;
using Ovpn.DataPlane;
using Ovpn.Protocol.Control;
using Ovpn.Protocol.Wire;

namespace Ovpn.ControlPlane.Tests.Sessions;

/// <summary>
/// The key-state bookkeeping both roles share (ServerSession, ClientConnection): key-id sequence,
/// slots, renegotiation decisions, hand-window, swap and retirement. Time is passed in, so every
/// decision is checked at its exact boundary without waiting.
/// </summary>
public sealed class KeyStateTableTests
{
    private const ulong OwnSid = 0x1111_2222_3333_4444;
    private const ulong PeerSid = 0x5555_6666_7777_8888;

    private sealed class TestKey(int keyId, long nowMs, List<Action>? posted = null)
        : KeyState(keyId, OwnSid, PeerSid, nowMs, a => posted?.Add(a))
    {
        public bool Hold;
        public int DisposedHookCalls;

        protected override bool HoldSend(long nowMs) => Hold;

        protected override void OnDisposed() => DisposedHookCalls++;
    }

    private sealed class CountingLink : ILinkTransport
    {
        public List<byte[]> Sent { get; } = [];

        public bool IsTcp => false;

        public EndPoint Remote { get; } = new IPEndPoint(IPAddress.Loopback, 1194);

        public void Send(ReadOnlySpan<byte> packet) => Sent.Add(packet.ToArray());

        public string Describe() => "test";

        public void Close()
        {
        }
    }

    /// <summary>The first packet a key state would put on the wire (its reset).</summary>
    private static ControlPacket FirstPacket(TestKey k, long nowMs)
    {
        Assert.True(k.Rel.TryGetPacketToSend(nowMs, out var p));
        return p!;
    }

    /// <summary>The peer ACKs message 0 (our reset) of <paramref name="k"/>.</summary>
    private static void AckReset(TestKey k, long nowMs) =>
        Assert.True(k.Rel.OnReceived(new ControlPacket { Opcode = Opcode.AckV1, KeyId = k.KeyId, SessionId = PeerSid, PeerSessionId = OwnSid, Acks = [0] }, nowMs));

    /// <summary>A table with key 0 negotiated and primary since <paramref name="primarySinceMs"/>.</summary>
    private static (KeyStateTable<TestKey> Table, TestKey Key0) Established(long primarySinceMs = 1000)
    {
        var t = new KeyStateTable<TestKey>(isServer: true);
        var k0 = new TestKey(0, 0);
        t.Add(k0);
        k0.DataKeysReady = true;
        t.SetPrimary(0, primarySinceMs);
        return (t, k0);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 2)]
    [InlineData(6, 7)]
    [InlineData(7, 1)]
    public void NextKeyIdCountsOneToSevenAndWrapsToOne(int current, int expected) =>
        Assert.Equal(expected, KeyStateTable.NextKeyId(current));

    [Fact]
    public void KeyIdSequenceNeverReturnsToZero()
    {
        var seen = new List<int>();
        int id = 0;
        for (int i = 0; i < 20; i++)
        {
            id = KeyStateTable.NextKeyId(id);
            seen.Add(id);
        }

        Assert.DoesNotContain(0, seen);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 1, 2], seen.Take(9));
    }

    [Theory]
    [InlineData(true, Opcode.ControlHardResetServerV2)]
    [InlineData(false, Opcode.ControlHardResetClientV2)]
    public void KeyZeroQueuesTheRolesHardResetOthersASoftReset(bool isServer, Opcode hardReset)
    {
        var t = new KeyStateTable<TestKey>(isServer);
        var k0 = new TestKey(0, 0);
        t.Add(k0);
        var p0 = FirstPacket(k0, 0);
        Assert.Equal(hardReset, p0.Opcode);
        Assert.Equal(0, p0.KeyId);
        Assert.Equal(OwnSid, p0.SessionId);

        var k3 = new TestKey(3, 0);
        t.Add(k3);
        var p3 = FirstPacket(k3, 0);
        Assert.Equal(Opcode.ControlSoftResetV1, p3.Opcode);
        Assert.Equal(3, p3.KeyId);
    }

    [Fact]
    public void LookupFindsEachKeyStateByKeyId()
    {
        var (t, k0) = Established();
        var k1 = new TestKey(1, 0);
        t.Add(k1);

        Assert.Same(k0, t[0]);
        Assert.Same(k1, t[1]);
        Assert.Null(t[2]);
        Assert.Same(k1, t.Latest);
        Assert.Same(k0, t.Primary);
        Assert.Equal(1, t.LatestKeyId);
        Assert.Equal(0, t.PrimaryKeyId);
    }

    [Fact]
    public void EmptyTableHasNoLatestOrPrimary()
    {
        var t = new KeyStateTable<TestKey>(isServer: false);
        Assert.Equal(-1, t.LatestKeyId);
        Assert.Equal(-1, t.PrimaryKeyId);
        Assert.Null(t.Latest);
        Assert.Null(t.Primary);
        Assert.False(t.IsSettled);
        Assert.False(t.AcceptsPeerSoftReset(0));
        Assert.False(t.AcceptsPeerSoftReset(1));
    }

    [Fact]
    public void CapacityIsEightAndEveryKeyIdHasASlot()
    {
        Assert.Equal(8, KeyStateTable.Capacity);
        var t = new KeyStateTable<TestKey>(isServer: true);
        for (int id = 0; id < KeyStateTable.Capacity; id++)
        {
            var k = new TestKey(id, 0);
            t.Add(k);
            Assert.Same(k, t[id]);
        }

        Assert.Throws<IndexOutOfRangeException>(() => t[KeyStateTable.Capacity]);
    }

    [Fact]
    public void AddKeepsOnlyTheNewKeyStateAndThePrimary()
    {
        var (t, k0) = Established();
        var k1 = new TestKey(1, 0);
        t.Add(k1);
        var k2 = new TestKey(2, 0);
        t.Add(k2);

        // k1 was neither primary nor latest any more: disposed and gone.
        Assert.True(k1.Disposed);
        Assert.Equal(1, k1.DisposedHookCalls);
        Assert.Null(t[1]);
        Assert.False(k0.Disposed);
        Assert.Same(k0, t[0]);
        Assert.Same(k2, t[2]);
        int live = Enumerable.Range(0, KeyStateTable.Capacity).Count(i => t[i] is not null);
        Assert.Equal(2, live);
    }

    [Fact]
    public void AddIntoAnOccupiedSlotDisposesTheOldKeyState()
    {
        var t = new KeyStateTable<TestKey>(isServer: true);
        var first = new TestKey(0, 0);
        t.Add(first);
        var second = new TestKey(0, 10);
        t.Add(second);
        Assert.True(first.Disposed);
        Assert.False(second.Disposed);
        Assert.Same(second, t[0]);
    }

    [Fact]
    public void WrappingRenegotiationsReuseSlotsOneToSeven()
    {
        var (t, _) = Established();
        long now = 1000;
        for (int round = 0; round < 10; round++)
        {
            int next = KeyStateTable.NextKeyId(t.LatestKeyId);
            var k = new TestKey(next, now);
            t.Add(k);
            k.DataKeysReady = true;
            k.SwapPending = true;
            t.CompleteSwap(k, ++now);
            Assert.Equal(next, t.PrimaryKeyId);
            Assert.NotEqual(0, next);
        }

        // 10 renegotiations after key 0: 1..7, then 1, 2, 3.
        Assert.Equal(3, t.PrimaryKeyId);
    }

    [Fact]
    public void PeerSoftResetIsAcceptedOnlyForTheNextIdAfterANegotiatedKey()
    {
        var t = new KeyStateTable<TestKey>(isServer: true);
        var k0 = new TestKey(0, 0);
        t.Add(k0);
        Assert.False(t.AcceptsPeerSoftReset(1)); // key 0 has no data keys yet

        k0.DataKeysReady = true;
        Assert.True(t.AcceptsPeerSoftReset(1));
        Assert.False(t.AcceptsPeerSoftReset(2));
        Assert.False(t.AcceptsPeerSoftReset(0));

        var k7 = new TestKey(7, 0) { DataKeysReady = true };
        t.Add(k7);
        Assert.True(t.AcceptsPeerSoftReset(1)); // wraps past 7 to 1, never 0
        Assert.False(t.AcceptsPeerSoftReset(0));

        t.Remove(k7); // gone, and no primary to fall back on
        Assert.False(t.AcceptsPeerSoftReset(1));
    }

    [Fact]
    public void FailedRenegotiationSettlesAndTheNextOneMayStartAfterTheRetryDelay()
    {
        var (t, k0) = Established(primarySinceMs: 0);
        Assert.True(t.MayStartRenegotiation(20_000));
        var k1 = new TestKey(1, 20_000);
        t.Add(k1);
        Assert.False(t.IsSettled);
        Assert.False(t.MayStartRenegotiation(20_000));

        // The attempt on key-id 1 fails at 30 s: the primary (key 0) carries on.
        t.RemoveFailed(k1, 30_000);
        Assert.True(k1.Disposed);
        Assert.Null(t[1]);
        Assert.Same(k0, t.Primary);
        Assert.True(t.IsSettled);

        // Not on every tick: only once the retry delay has passed.
        long retryAt = 30_000 + KeyStateTable<TestKey>.FailedRenegotiationRetryMs;
        Assert.False(t.MayStartRenegotiation(retryAt - 1));
        Assert.False(t.IsRenegotiationDue(retryAt - 1, renegSeconds: 10));
        Assert.True(t.MayStartRenegotiation(retryAt));
        Assert.True(t.IsRenegotiationDue(retryAt, renegSeconds: 10));

        // Both peers advanced past the failed id: the next key-id is 2, ours or the peer's.
        Assert.Equal(2, KeyStateTable.NextKeyId(t.LatestKeyId));
        Assert.True(t.AcceptsPeerSoftReset(2));
        Assert.False(t.AcceptsPeerSoftReset(1));

        var k2 = new TestKey(2, retryAt) { DataKeysReady = true, SwapPending = true };
        t.Add(k2);
        Assert.Same(k0, t[0]); // the primary survives the new attempt
        t.CompleteSwap(k2, retryAt + 1_000);
        Assert.Equal(2, t.PrimaryKeyId);
        Assert.True(t.IsSettled);
    }

    [Fact]
    public void RenegotiationIsDueStrictlyAfterRenegSeconds()
    {
        var (t, _) = Established(primarySinceMs: 1000);
        Assert.False(t.IsRenegotiationDue(1000 + 10_000, renegSeconds: 10));
        Assert.True(t.IsRenegotiationDue(1000 + 10_001, renegSeconds: 10));
    }

    [Fact]
    public void RenegSecondsZeroNeverRenegotiates()
    {
        var (t, _) = Established(primarySinceMs: 0);
        Assert.False(t.IsRenegotiationDue(long.MaxValue / 2, renegSeconds: 0));
    }

    [Fact]
    public void NoRenegotiationBeforeTheFirstKeyOrWhileOneIsRunning()
    {
        var t = new KeyStateTable<TestKey>(isServer: false);
        t.Add(new TestKey(0, 0));
        Assert.False(t.IsSettled); // no primary yet: neither reneg-sec nor a packet-id trigger may start one
        Assert.False(t.IsRenegotiationDue(1_000_000, renegSeconds: 1));

        t[0]!.DataKeysReady = true;
        t.SetPrimary(0, 0);
        Assert.True(t.IsSettled);
        Assert.True(t.IsRenegotiationDue(1_001, renegSeconds: 1));

        t.Add(new TestKey(1, 1_001)); // renegotiation running: latest != primary
        Assert.False(t.IsSettled);
        Assert.False(t.IsRenegotiationDue(1_000_000, renegSeconds: 1));
    }

    [Fact]
    public void RenegSecondsCountFromTheLatestSwap()
    {
        var (t, _) = Established(primarySinceMs: 0);
        var k1 = new TestKey(1, 5_000) { DataKeysReady = true, SwapPending = true };
        t.Add(k1);
        t.CompleteSwap(k1, 6_000);
        Assert.False(k1.SwapPending);
        Assert.Equal(6_000, t.PrimarySinceMs);
        Assert.False(t.IsRenegotiationDue(6_000 + 10_000, renegSeconds: 10));
        Assert.True(t.IsRenegotiationDue(6_000 + 10_001, renegSeconds: 10));
    }

    [Fact]
    public void HandshakeExpiresStrictlyAfterTheHandWindowUnlessKeysAreReady()
    {
        var k = new TestKey(1, 2_000);
        Assert.False(k.IsHandshakeExpired(2_000 + 60_000, handWindowSeconds: 60));
        Assert.True(k.IsHandshakeExpired(2_000 + 60_001, handWindowSeconds: 60));
        k.DataKeysReady = true;
        Assert.False(k.IsHandshakeExpired(2_000 + 600_000, handWindowSeconds: 60));

        // The client restarts the clock on AUTH_PENDING.
        var k0 = new TestKey(0, 0) { StartedMs = 50_000 };
        Assert.False(k0.IsHandshakeExpired(60_001, handWindowSeconds: 60));
    }

    [Theory]
    [InlineData(0, true, true)]
    [InlineData(0, false, true)]
    [InlineData(3, false, true)]
    [InlineData(3, true, false)]
    public void OnlyAFirstKeyOrUnestablishedFailureEndsTheSession(int keyId, bool established, bool ends) =>
        Assert.Equal(ends, new TestKey(keyId, 0).FailureEndsSession(established));

    [Fact]
    public void SwapWaitsForAllAckedAndTheSwapDelay()
    {
        var (t, _) = Established();
        var k1 = new TestKey(1, 0);
        t.Add(k1);
        FirstPacket(k1, 0); // our soft reset is in flight
        k1.DataKeysReady = true;
        k1.SwapPending = true;
        k1.OwnKeyDoneMs = 10_000;

        Assert.False(k1.IsSwapDue(20_000)); // reset not acked yet
        AckReset(k1, 20_000);
        Assert.True(k1.Rel.AllAcked);
        Assert.False(k1.IsSwapDue(10_000 + KeyStateTable.SwapDelayMs - 1));
        Assert.True(k1.IsSwapDue(10_000 + KeyStateTable.SwapDelayMs));

        k1.SwapPending = false;
        Assert.False(k1.IsSwapDue(100_000));
    }

    [Fact]
    public void ReplacedKeyIsRetiredOnlyAfterTheGraceWindow()
    {
        var (t, k0) = Established(primarySinceMs: 0);
        var k1 = new TestKey(1, 1_000) { DataKeysReady = true, SwapPending = true };
        t.Add(k1);

        // While k0 is primary it is never retirable, nor is the latest.
        Assert.False(t.IsRetirable(k0, 1_000_000, 5_000));
        Assert.False(t.IsRetirable(k1, 1_000_000, 5_000));

        t.CompleteSwap(k1, 2_000);
        Assert.False(t.IsRetirable(k0, 2_000 + 4_999, 5_000));
        Assert.True(t.IsRetirable(k0, 2_000 + 5_000, 5_000));
        Assert.False(t.IsRetirable(k1, 2_000 + 5_000, 5_000));

        t.Remove(k0);
        Assert.True(k0.Disposed);
        Assert.Null(t[0]);
        Assert.Same(k1, t.Primary);
    }

    [Fact]
    public void KeyStateWithoutDataKeysIsNotRetired()
    {
        var (t, _) = Established(primarySinceMs: 0);
        var k1 = new TestKey(1, 0) { DataKeysReady = true };
        t.Add(k1);
        t.CompleteSwap(k1, 0);
        var k2 = new TestKey(2, 0); // handshake running: latest; becomes stale only when k3 arrives
        t.Add(k2);
        Assert.False(t.IsRetirable(k2, 1_000_000, 5_000));
    }

    [Fact]
    public void RemoveOfAReplacedKeyStateLeavesItsSuccessorInTheSlot()
    {
        var t = new KeyStateTable<TestKey>(isServer: true);
        var stale = new TestKey(0, 0);
        t.Add(stale);
        var fresh = new TestKey(0, 1);
        t.Add(fresh);
        t.Remove(stale);
        Assert.Same(fresh, t[0]);
    }

    [Fact]
    public void ClearDisposesEveryKeyStateOnce()
    {
        var (t, k0) = Established();
        var k1 = new TestKey(1, 0);
        t.Add(k1);
        t.Clear();
        t.Clear();
        Assert.True(k0.Disposed);
        Assert.True(k1.Disposed);
        Assert.Equal(1, k0.DisposedHookCalls);
        Assert.Equal(1, k1.DisposedHookCalls);
        Assert.Null(t[0]);
        Assert.Null(t[1]);
    }

    [Fact]
    public void SendDueWrapsEachKeyStatesPacketsUnlessItHoldsThem()
    {
        var t = new KeyStateTable<TestKey>(isServer: true);
        var k0 = new TestKey(0, 0) { Hold = true };
        t.Add(k0);
        var link = new CountingLink();
        var wrap = ControlWrapper.CreateNone();

        t.SendDue(0, 0, wrap, link);
        Assert.Empty(link.Sent);

        k0.Hold = false;
        t.SendDue(0, 0, wrap, link);
        var sent = Assert.Single(link.Sent);
        Assert.Equal(((int)Opcode.ControlHardResetServerV2 << 3) | 0, sent[0]); // opcode/key-id byte

        t.SendDue(1, 0, wrap, link); // nothing new due before the retransmission timeout
        Assert.Single(link.Sent);
    }

    [Fact]
    public void TlsOutputIsPumpedOnTheOwnersLoop()
    {
        var posted = new List<Action>();
        var k = new TestKey(1, 0, posted);
        k.Stream.Write([1, 2, 3], 0, 3);
        var post = Assert.Single(posted);
        Assert.Equal(0, k.Rel.InFlightCount + k.Rel.BacklogCount); // nothing moves until the loop runs it
        post();
        Assert.Equal(1, k.Rel.InFlightCount + k.Rel.BacklogCount);
    }
}
