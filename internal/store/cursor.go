package store

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// A List cursor is the position of the last campaign a page examined: its
// creation time in Unix milliseconds and its ID, "<ms>:<id>" in base64url.

func encodeCursor(ms int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(ms, 10) + ":" + id))
}

func decodeCursor(cursor string) (ms int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, "", fmt.Errorf("cursor %q: %w", cursor, ErrInvalid)
	}
	s, id, ok := strings.Cut(string(b), ":")
	if !ok || id == "" {
		return 0, "", fmt.Errorf("cursor %q: %w", cursor, ErrInvalid)
	}
	if ms, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, "", fmt.Errorf("cursor %q: %w", cursor, ErrInvalid)
	}
	return ms, id, nil
}

// after reports whether position (ms, id) comes after the cursor's (cms, cid).
func after(ms int64, id string, cms int64, cid string) bool {
	return ms > cms || (ms == cms && id > cid)
}
