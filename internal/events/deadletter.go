package events

import (
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// DLQ copy headers set when the copy could not hold the whole command.
const (
	// HdrBodyTruncated is set on a DLQ copy whose body was cut to fit in a
	// message: the original body's length in bytes. The body is a prefix of
	// the original's.
	HdrBodyTruncated = "Body-Truncated"
	// HdrHeadersTruncated is set on a DLQ copy when some of the command's
	// header values were cut (to maxCopiedValueBytes) or left out (a key
	// nats.go cannot publish, or past maxCopiedHeaderBytes): how many.
	HdrHeadersTruncated = "Headers-Truncated"
)

// MaxDeadLetterBytes bounds a DLQ copy built by NewDeadLetterMsg, headers
// (as encoded on the wire) and body together. It leaves 8 KiB under NATS'
// default max payload and CAMPAIGN_DLQ's max_msg_size (1 MiB) for the
// headers the publisher adds (Nats-Msg-Id, Nats-Expected-Stream), so that a
// DLQ copy can always be published, whatever the command held.
const MaxDeadLetterBytes = 1<<20 - 8<<10

// Bounds on the headers of a DLQ copy. JetStream refuses a message with more
// than 64 KiB of headers (nats-server: "header size exceeds maximum allowed
// of 64k"), and a command may come with nearly that much: what is copied of
// the command's headers (32 KiB), the Reason (1 KiB), Original-Subject
// (16 KiB) and what the publisher adds stay well under it.
const (
	// maxCopiedValueBytes bounds each header value copied.
	maxCopiedValueBytes = 4096
	// maxCopiedKeyBytes: a header with a longer key is left out.
	maxCopiedKeyBytes = 256
	// maxCopiedHeaderBytes bounds the encoded size of all the headers
	// copied from the command.
	maxCopiedHeaderBytes = 32 << 10
	// maxOriginalSubjectBytes bounds Original-Subject (NATS' max control
	// line, 4 KiB by default, keeps real subjects far below).
	maxOriginalSubjectBytes = 16 << 10
)

// firstCopied are the headers copied first, so that a command's many other
// headers cannot push them out.
var firstCopied = []string{HdrTraceparent, "tracestate"}

// dlqHeaders are the headers NewDeadLetterMsg sets itself: the command's own
// (in any case) are never copied.
var dlqHeaders = []string{HdrReason, HdrOriginalSubject, HdrOriginalSequence, HdrCommandID, HdrBodyTruncated, HdrHeadersTruncated}

// NewDeadLetterMsg builds the CAMPAIGN_DLQ copy of a command that cannot be
// processed: subject DLQSubject(inv.Tenant, inv.Campaign), the original body
// and headers (except the reserved Nats-* ones and the DLQ's own), plus
// Reason (inv.Reason bounded by BoundReason, on one line), Original-Subject,
// Original-Sequence (streamSeq, when not 0) and Command-Id (inv.ID, when it
// is a usable command id), so that the command can be replayed with its id.
// It sets no Nats-Msg-Id: the publisher chooses the one that deduplicates
// its copies (DeadLetter, or the MAX_DELIVERIES handler of
// internal/deadletter).
//
// The copy is always publishable: at most MaxDeadLetterBytes (headers and
// body), headers well under JetStream's 64 KiB, keys that nats.go can send.
// Header values longer than 4 KiB are cut, headers past 32 KiB in all (the
// traceparent first, then in key order) or with keys nats.go cannot send are
// left out (Headers-Truncated: how many values cut or left out); a body that
// does not fit is cut (Body-Truncated: its original length). A command whose
// copy is marked so cannot be replayed from it.
func NewDeadLetterMsg(original *nats.Msg, inv *InvalidCommand, streamSeq uint64) *nats.Msg {
	m := nats.NewMsg(DLQSubject(inv.Tenant, inv.Campaign))
	cut := copyHeaders(m.Header, original.Header)
	m.Header.Set(HdrReason, oneLine(BoundReason(inv.Reason), maxReasonLen))
	if subj := original.Subject; len(subj) <= maxOriginalSubjectBytes {
		m.Header.Set(HdrOriginalSubject, subj)
	} else {
		m.Header.Set(HdrOriginalSubject, oneLine(bound(subj, maxOriginalSubjectBytes), maxOriginalSubjectBytes))
		cut++
	}
	if streamSeq > 0 {
		m.Header.Set(HdrOriginalSequence, strconv.FormatUint(streamSeq, 10))
	}
	if inv.ID != "" && len(inv.ID) <= maxCommandIDLen && !strings.ContainsAny(inv.ID, "\r\n") {
		m.Header.Set(HdrCommandID, inv.ID)
	}
	if cut > 0 {
		m.Header.Set(HdrHeadersTruncated, strconv.Itoa(cut))
	}
	m.Data = original.Data
	if room := MaxDeadLetterBytes - encodedHeaderSize(m.Header); len(m.Data) > room {
		n := len(m.Data)
		m.Header.Set(HdrBodyTruncated, strconv.Itoa(n))
		room -= len(HdrBodyTruncated) + len(": \r\n") + len(strconv.Itoa(n))
		m.Data = m.Data[:max(room, 0)]
	}
	return m
}

// copyHeaders copies src's headers into dst within the bounds above,
// firstCopied first, then in key order (the same copy from the same
// message), leaving out Nats-* and the DLQ's own headers. It returns how
// many values it cut or left out.
func copyHeaders(dst, src nats.Header) (cut int) {
	keys := make([]string, 0, len(src))
	for k := range src {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		if i := slices.IndexFunc(firstCopied, func(h string) bool { return strings.EqualFold(h, k) }); i >= 0 {
			return i
		}
		return len(firstCopied)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	size := 0
	for _, k := range keys {
		vs := src[k]
		lk := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lk, "nats-"):
			continue // Nats-Msg-Id, Nats-Expected-*, stream metadata…: not for the copy
		case slices.ContainsFunc(dlqHeaders, func(h string) bool { return strings.EqualFold(h, k) }):
			continue // set by NewDeadLetterMsg, never forged by the command
		case len(k) > maxCopiedKeyBytes || !validHeaderKey(k):
			cut += len(vs)
			continue
		}
		for _, v := range vs {
			if len(v) > maxCopiedValueBytes {
				v = bound(v, maxCopiedValueBytes)
				cut++
			}
			if n := len(k) + len(v) + len(": \r\n"); size+n <= maxCopiedHeaderBytes {
				dst[k] = append(dst[k], v)
				size += n
			} else {
				cut++
			}
		}
	}
	return cut
}

// validHeaderKey reports whether nats.go publishes a header with key k
// (printable ASCII but `"(),/:;<=>?@[\]{}`): it parses headers it refuses
// to send, and one of those would make every publish of the copy fail.
func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 33 || c > 126 || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// encodedHeaderSize is the size of h on the wire ("NATS/1.0\r\n", a
// "Key: value\r\n" line per value, "\r\n"), or a little more (nats.go trims
// the values); 0 for no header.
func encodedHeaderSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + len(": \r\n")
		}
	}
	return n
}
