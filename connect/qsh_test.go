package connect

import "testing"

// Golden vectors: the hashes are atlassian-jwt's own test expectations
// (atlassian-jwt-js test/jwt.test.ts) and Atlassian's documented examples
// (developer.atlassian.com query-string-hash; the Java reference text), plus
// the cross-checked table of ../shared/docs/CONNECT.md §1.4.
func TestQueryStringHashGolden(t *testing.T) {
	cases := []struct {
		name                      string
		method, path, query, base string
		canonical, qsh            string
	}{
		{name: "atlassian-jwt: no query string", method: "get", path: "/path",
			canonical: "GET&/path&", qsh: "799be84a7fa35570087163c0cd9af3abff7ac05c2c12ba0bb1d7eebc984b3ac2"},
		{name: "atlassian-jwt: no path nor query", method: "get", path: "",
			canonical: "GET&/&", qsh: "c88caad15a1c1a900b8ac08aa9686f4e8184539bea1deda36e2f649430df3239"},
		{name: "atlassian-jwt: root path", method: "get", path: "/",
			canonical: "GET&/&", qsh: "c88caad15a1c1a900b8ac08aa9686f4e8184539bea1deda36e2f649430df3239"},
		{name: "atlassian-jwt: query string, jwt dropped", method: "get", path: "/hello-world",
			query:     "lic=none&tz=Australia%2FSydney&cp=%2Fjira&user_key=&loc=en-US&user_id=&jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEzODY5MTEzNTYsImlzcyI6ImppcmE6MTU0ODk1OTUiLCJxc2giOiI4MDYzZmY0Y2ExZTQxZGY3YmM5MGM4YWI2ZDBmNjIwN2Q0OTFjZjZkYWQ3YzY2ZWE3OTdiNDYxNGI3MTkyMmU5IiwiaWF0IjoxMzg2OTExMTc2fQ.rAsxpHv0EvpXkhjnZnSV14EXJgDx3KSQjgYRjfKnFt8&xdm_e=http%3A%2F%2Fstorm%3A2990&xdm_c=channel-servlet-hello-world&xdm_p=1",
			canonical: "GET&/hello-world&cp=%2Fjira&lic=none&loc=en-US&tz=Australia%2FSydney&user_id=&user_key=&xdm_c=channel-servlet-hello-world&xdm_e=http%3A%2F%2Fstorm%3A2990&xdm_p=1",
			qsh:       "8063ff4ca1e41df7bc90c8ab6d0f6207d491cf6dad7c66ea797b4614b71922e9"},
		{name: "atlassian-jwt: POST without query", method: "post", path: "/hello-world",
			canonical: "POST&/hello-world&", qsh: "6f95f3738e1b037a3bebbe0ad237d80fdbc1d5ae452e98ce03a9c004c178ebb4"},
		{name: "atlassian-jwt: repeated values sorted, app base path dropped", method: "get", path: "/base/path/to/service", base: "/base",
			query:     "zee_last=param&repeated=parameter%201&first=param&repeated=parameter%202&repeated=Parameter%202",
			canonical: "GET&/path/to/service&first=param&repeated=Parameter%202,parameter%201,parameter%202&zee_last=param"},
		{name: "atlassian-jwt: valueless parameters", method: "get", path: "/hello-world", query: "a&b=foo&c",
			canonical: "GET&/hello-world&a=&b=foo&c="},
		{name: "atlassian-jwt: ampersands in the path under a context path", method: "post", path: "/jira/rest/api/2/project/jira&a=b&c=d", query: "x=y", base: "/jira",
			canonical: "POST&/rest/api/2/project/jira%26a=b%26c=d&x=y"},
		{name: "Atlassian's Java reference example", method: "GET", path: "/path/to/service",
			query:     "zee_last=param&repeated=parameter+1&first=param&repeated=parameter+2",
			canonical: "GET&/path/to/service&first=param&repeated=parameter%201,parameter%202&zee_last=param",
			qsh:       "e52bb281606c3bd9ca16cfe96fe2df78f5d9ffa126f06befd750dfa10fa1a897"},
		{name: "Atlassian docs: POST /user", method: "POST", path: "/user", canonical: "POST&/user&"},
		{name: "Atlassian docs: GET /?param=foo", method: "GET", path: "/", query: "param=foo", canonical: "GET&/&param=foo"},
		{name: "CONNECT.md: REST path", method: "GET", path: "/rest/api/2/project",
			canonical: "GET&/rest/api/2/project&", qsh: "376b86be226be6ed221f7a5c1ff9bafdf495036773264e22822dbff68e8aeafa"},
		{name: "CONNECT.md: sorted, jwt dropped", method: "get", path: "/hello", query: "b=2&a=1&jwt=abc",
			canonical: "GET&/hello&a=1&b=2", qsh: "64650259df536a76d17c24075337e211b7631a0a1afb8d2959ec5f18ed411382"},
		{name: "CONNECT.md: /wiki dropped, reserved characters", method: "POST", path: "/wiki/rest/api/content/", base: "/wiki",
			query:     "spaceKey=A%20B&title=a+b*c~d!e'f(g)",
			canonical: "POST&/rest/api/content&spaceKey=A%20B&title=a%20b%2Ac~d%21e%27f%28g%29",
			qsh:       "3ec62c60b93ee4e1be98cb611dbfa047496f1325b2f5daa21580ff44c805b4c6"},
		{name: "CONNECT.md: & in path, non-ASCII value", method: "GET", path: "/base/issue/a&b/", base: "/base", query: "q=%C3%A9",
			canonical: "GET&/issue/a%26b&q=%C3%A9", qsh: "6b858085a1674f28ed0244527de2120aa094d504b2653982e662822931d12a82"},
		{name: "CONNECT.md: names sorted as names, not name=value", method: "GET", path: "/macro", query: "a-b=1&a=2&a_b=3",
			canonical: "GET&/macro&a=2&a-b=1&a_b=3", qsh: "17e71ba5bb79ca63b91a4d5a21170290ec0dd55c8a3305db748de402b2a2f101"},
		{name: "signed install under the /connect base", method: "POST", path: "/connect/installed", base: "/connect/",
			canonical: "POST&/installed&"},
		{name: "signed install at the origin", method: "POST", path: "/connect/installed",
			canonical: "POST&/connect/installed&"},
		{name: "a base that is only a prefix of a segment is kept", method: "POST", path: "/connector/installed", base: "/connect",
			canonical: "POST&/connector/installed&"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CanonicalRequest(tc.method, tc.path, tc.query, tc.base); got != tc.canonical {
				t.Errorf("canonical request\n got %s\nwant %s", got, tc.canonical)
			}
			if tc.qsh == "" {
				return
			}
			if got := QueryStringHash(tc.method, tc.path, tc.query, tc.base); got != tc.qsh {
				t.Errorf("qsh = %s, want %s", got, tc.qsh)
			}
		})
	}
}
