package proxy

import (
	"strconv"
)

// Splicing: the body sent upstream is the client's bytes with at most a few
// root values replaced or members added (rewrite), at the places the scan
// found (scan.go). Nothing else is re-encoded, so the provider reads exactly
// what the client wrote, less what the gateway sets: before, the parsed body
// was re-marshalled, which re-escaped every key the inspection had read the
// Go way ("\x01" is not JSON) and cost a full encode of the body.

// edit replaces body[start:end] (an insertion when start == end).
type edit struct {
	start, end int
	put        editKind
}

type editKind uint8

const (
	putModel         editKind = iota // the upstream model name, as a string
	putLimit                         // the granted output limit
	putLimitMember                   // `,"<field>":<limit>` before the closing brace
	putTrue                          // true (include_usage's value)
	putUsageFirst                    // `"include_usage":true` first in stream_options (and a comma if more follow)
	putUsageObject                   // {"include_usage":true} (stream_options that was not an object)
	putOptionsMember                 // `,"stream_options":{"include_usage":true}` before the closing brace
	putModelMember                   // `,"model":"<name>"` before the closing brace (the root has members)
)

// splice appends body with the edits applied (sorted by start, not
// overlapping) to dst.
func splice(dst, body []byte, edits []edit, field, upstreamModel string, grant int64, optionsHaveMembers bool) []byte {
	at := 0
	for _, e := range edits {
		dst = append(dst, body[at:e.start]...)
		switch e.put {
		case putModel:
			dst = appendJSONString(dst, upstreamModel)
		case putLimit:
			dst = strconv.AppendInt(dst, grant, 10)
		case putLimitMember:
			dst = append(dst, ',')
			dst = appendJSONString(dst, field)
			dst = append(dst, ':')
			dst = strconv.AppendInt(dst, grant, 10)
		case putTrue:
			dst = append(dst, "true"...)
		case putUsageFirst:
			dst = append(dst, `"include_usage":true`...)
			if optionsHaveMembers {
				dst = append(dst, ',')
			}
		case putUsageObject:
			dst = append(dst, `{"include_usage":true}`...)
		case putOptionsMember:
			dst = append(dst, `,"stream_options":{"include_usage":true}`...)
		case putModelMember:
			dst = append(dst, `,"model":`...)
			dst = appendJSONString(dst, upstreamModel)
		}
		at = e.end
	}
	return append(dst, body[at:]...)
}
