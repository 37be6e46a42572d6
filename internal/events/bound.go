package events

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Bounds on what the orchestrator repeats of a message it was given. Anyone
// may publish a command (CONTRACT section 4), so every value of one that is
// copied into a reason, a header, an event or a log line is bounded: an
// attacker's 400 KB field must not become a 1.2 MB reason that no event, no
// Term and no DLQ copy can carry (CONTRACT section 9, guarantee 6).
const (
	// MaxReasonBytes bounds InvalidCommand.Reason, the Reason header of a DLQ
	// copy and so the reason of a campaign.command.rejected event and of a
	// Term. A reason is always valid UTF-8.
	MaxReasonBytes = 1024
	// MaxQuotedBytes bounds what QuoteBounded returns: one value quoted in a
	// reason. A few of them and the reason's own words fit in MaxReasonBytes.
	MaxQuotedBytes = 200
	// MaxCommandIDBytes bounds a command id: a longer one is no usable id
	// (DecodeCommand rejects the command and reports no id).
	MaxCommandIDBytes = maxCommandIDLen
	// maxVerbBytes bounds InvalidCommand.Verb when the subject's last token
	// is not a verb.
	maxVerbBytes = 64
	// maxJSONErrorBytes bounds the text of a JSON error in a reason.
	maxJSONErrorBytes = 512
)

// ReasonTooLarge is a fixed, short reason for a campaign.command.rejected
// event whose real reason still does not fit in an event: the worker's
// fallback. Reasons from DecodeCommand never need it (they are at most
// MaxReasonBytes).
const ReasonTooLarge = "command rejected: reason too large"

// The Reason header (publish.go's maxReasonLen) and MaxReasonBytes must stay
// equal: this fails to compile when they differ.
var _ = [1]struct{}{}[MaxReasonBytes-maxReasonLen]

// QuoteBounded quotes s as %q does (invalid bytes and control characters
// escaped, so the result is valid UTF-8) when that takes at most
// MaxQuotedBytes. A longer value is cut on a character boundary and marked
// with an ellipsis and its length in bytes, all within MaxQuotedBytes:
//
//	"\xff\xff\xff…" (400000 bytes)
//
// Use it for every value of a message quoted in a reason.
func QuoteBounded(s string) string {
	suffix := `…" (` + strconv.Itoa(len(s)) + " bytes)"
	budget := MaxQuotedBytes - len(suffix) // for `"` and the escaped prefix
	b := make([]byte, 1, MaxQuotedBytes+16)
	b[0] = '"'
	cut := 1
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		q := strconv.Quote(s[i : i+size]) // one character, or one invalid byte
		b = append(b, q[1:len(q)-1]...)
		i += size
		if len(b) <= budget {
			cut = len(b)
		}
		if len(b)+1 > MaxQuotedBytes {
			return string(b[:cut]) + suffix
		}
	}
	return string(append(b, '"'))
}

// BoundReason returns reason as valid UTF-8 (each run of invalid bytes
// replaced by U+FFFD) and at most MaxReasonBytes: a longer one is cut on a
// character boundary and ends with "… (<its original length> bytes)". A
// reason that is already valid and short enough is returned unchanged.
func BoundReason(reason string) string { return bound(reason, MaxReasonBytes) }

// bound is BoundReason with another limit (at least 32).
func bound(s string, limit int) string {
	if len(s) <= limit && utf8.ValidString(s) {
		return s
	}
	n := len(s)
	s = strings.ToValidUTF8(s, "\uFFFD")
	if n <= limit && len(s) <= limit {
		return s // only made valid (a lone invalid byte takes 3 bytes as U+FFFD)
	}
	suffix := "… (" + strconv.Itoa(n) + " bytes)"
	return cutRunes(s, limit-len(suffix)) + suffix
}

// cutRunes returns the longest prefix of s of at most n bytes that does not
// split a character.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
