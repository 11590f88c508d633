package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// MsgType is the kind of a datagram. The type says whether a datagram is for
// a host's locator or its node (ForLocator); the transport routes it to that
// process's port (internal/transport: node manager on P, locator on P+1).
type MsgType uint8

const (
	MsgToken      MsgType = 1 // node -> next node: the circulating token
	MsgCheckIn    MsgType = 2 // node -> every locator: check-in, lease claim or renewal, or a probe
	MsgAck        MsgType = 3 // locator -> node: answer to a CheckIn
	MsgRelease    MsgType = 4 // node -> locators: "I no longer hold epoch E" (handover, failed claim)
	MsgTransfer   MsgType = 5 // old active -> new active: "take over now"
	MsgJoin       MsgType = 6 // node -> nodes: "I am alive, put me in the ring"
	MsgSwitchover MsgType = 7 // any node -> active: "please hand over to To"
	msgTypeMax            = MsgSwitchover
)

func (t MsgType) String() string {
	switch t {
	case MsgToken:
		return "token"
	case MsgCheckIn:
		return "checkin"
	case MsgAck:
		return "ack"
	case MsgRelease:
		return "release"
	case MsgTransfer:
		return "transfer"
	case MsgJoin:
		return "join"
	case MsgSwitchover:
		return "switchover"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ForLocator reports whether a datagram of this type is addressed to the
// locator of the receiving host (otherwise to its node).
func (t MsgType) ForLocator() bool { return t == MsgCheckIn || t == MsgRelease }

// FromLocator reports whether a datagram of this type is sent by a locator.
// The receiver keeps separate replay windows for a host's node and locator.
func (t MsgType) FromLocator() bool { return t == MsgAck }

// Message is one decoded datagram: the header every datagram carries and
// the body of its Type (the other body fields are zero).
type Message struct {
	Type        MsgType
	From        string // sender host id
	ClusterID   uint64 // ClusterID(Config.Cluster)
	Epoch       uint64 // highest epoch the sender knows (informational)
	Incarnation uint64 // sender's process incarnation, increases at every start
	Seq         uint64 // per-incarnation sequence number, from 1, counted per destination process
	// To is the destination host id; the receiver refuses a datagram for
	// another host (ReplayFilter: ErrDestination).
	To string
	// ToIncarnation is the incarnation of the destination process as the
	// sender last heard it (0: never heard from it). A receiver acts only
	// on datagrams stamped with its own current incarnation, so nothing
	// sent before it (re)started — a replay — is ever acted on.
	ToIncarnation uint64

	Token      Token
	CheckIn    CheckIn
	Ack        Ack
	Release    Release
	Transfer   Transfer
	Switchover Switchover
}

// NodeHealth is one node's summary as carried in the token.
type NodeHealth struct {
	ID          string
	Healthy     bool // every critical process is up
	Maintenance bool // the node refuses the active role
	InRing      bool // the token visits this node
}

// Token is the body of MsgToken.
type Token struct {
	Epoch    uint64 // epoch of the active that generated this token
	Seq      uint64 // hop counter; (Epoch, Seq) orders tokens
	Active   string // active node as the sender knows it, "" if none
	Handover string // node the previous active handed over to, "" if none
	Nodes    []NodeHealth
}

// CheckIn is the body of MsgCheckIn. With Claim it asks for (or renews) the
// lease of epoch Epoch for the sender; without, it is a check-in or a probe
// ("who is active?"). Every CheckIn is answered by an Ack echoing Round.
type CheckIn struct {
	Round       uint64
	Claim       bool
	Epoch       uint64
	Healthy     bool
	Maintenance bool
	TokenSeq    uint64
	// Conf is the membership the sender counts its quorum in; Next, when
	// not the zero value, a change of it one member away (proposed by the
	// active, or one some locators adopted and the sender finishes).
	// Config.LastManStanding only.
	Conf, Next Membership
}

// Ack is the body of MsgAck, a locator's answer to a CheckIn.
type Ack struct {
	Round   uint64        // echoed from the CheckIn
	Granted bool          // the claim/renewal was granted
	Epoch   uint64        // the locator's current epoch (after this request)
	Holder  string        // the locator's current holder, "" if none
	GrantIn time.Duration // how long until this locator could grant another holder (0: now)
	// Stale: the CheckIn was addressed to another incarnation of this
	// locator and was not considered. The node re-sends it, stamped with
	// the incarnation this Ack carries.
	Stale bool
	// Conf is the membership this locator has adopted, after this
	// request (Config.LastManStanding only).
	Conf Membership
}

// Release is the body of MsgRelease.
type Release struct{ Epoch uint64 }

// Transfer is the body of MsgTransfer.
type Transfer struct {
	Epoch uint64
	To    string
}

// Switchover is the body of MsgSwitchover; To "" means "any healthy node".
//
// TokenSeq is the sequence number of the last token of the message's epoch
// the requester saw: the active carries the request out only while the
// token has not moved on by more than a token timeout's worth of passes
// since (Node.Step), so that a request lost and then replayed, or held up
// in the network, cannot move the role long after it was made. 0: a
// sender from before the field (wire version 3 without it), taken as
// fresh.
type Switchover struct {
	To       string
	TokenSeq uint64
}

// ClusterID is the 64-bit hash of a cluster name carried in every datagram.
func ClusterID(name string) uint64 {
	s := sha256.Sum256([]byte("vigil-cluster\x00" + name))
	return binary.BigEndian.Uint64(s[:8])
}

// Envelope is an outgoing message and the host it is for.
type Envelope struct {
	To  string
	Msg Message
}
