/*
** http_json.c: the JSON decoder behind resp:json() (RFC 8259).
**
** lua-cjson (which still encodes the `json =` option) decodes every number
** as a float, so an id came back as 1.0 and a 64-bit id lost its last
** digits. Here a number written without a fraction or an exponent is an
** integer when it fits in 64 bits (lua_stringtonumber's own rule, the one
** the Lua parser applies to a literal); any other number is a float: 1.0
** stays 1.0, 2^63 and beyond become floats. Otherwise it decodes as
** lua-cjson does: objects and arrays are tables, null is the light userdata
** NULL (equal to cjson.null), nesting is limited to 1000 levels. It is
** stricter where RFC 8259 is: no control characters inside strings, no
** lone surrogates in \u escapes, no leading zeros, no NaN or Infinity, no
** trailing data. A leading UTF-8 byte order mark is skipped.
*/
#include "http.h"

#include <stdio.h>
#include <string.h>

#define JSON_MAX_DEPTH 1000

typedef struct jdec {
  lua_State *L;
  const char *s, *p, *end;
  int depth;
  char msg[96];
} jdec;

/* Records the first error; always returns -1. */
static int fail(jdec *d, const char *what) {
  size_t at = (size_t)(d->p - d->s) + 1;
  if (d->p >= d->end)
    snprintf(d->msg, sizeof d->msg, "%s at the end of the document", what);
  else if ((unsigned char)*d->p >= 0x20 && (unsigned char)*d->p < 0x7f)
    snprintf(d->msg, sizeof d->msg, "%s at byte %zu ('%c')", what, at, *d->p);
  else
    snprintf(d->msg, sizeof d->msg, "%s at byte %zu (byte %d)", what, at,
             (int)(unsigned char)*d->p);
  return -1;
}

static void skip_ws(jdec *d) {
  while (d->p < d->end &&
         (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
    d->p++;
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number(jdec *d) {
  const char *q = d->p, *start = d->p;
  char small[64];
  if (q < d->end && *q == '-') q++;
  if (q >= d->end || !is_digit(*q)) {
    d->p = q;
    return fail(d, "expected a digit");
  }
  if (*q == '0') {
    q++;
    if (q < d->end && is_digit(*q)) {
      d->p = q;
      return fail(d, "a number with a leading zero");
    }
  } else {
    while (q < d->end && is_digit(*q))
      q++;
  }
  if (q < d->end && *q == '.') {
    q++;
    if (q >= d->end || !is_digit(*q)) {
      d->p = q;
      return fail(d, "expected a digit after the decimal point");
    }
    while (q < d->end && is_digit(*q))
      q++;
  }
  if (q < d->end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < d->end && (*q == '+' || *q == '-')) q++;
    if (q >= d->end || !is_digit(*q)) {
      d->p = q;
      return fail(d, "expected a digit in the exponent");
    }
    while (q < d->end && is_digit(*q))
      q++;
  }
  size_t n = (size_t)(q - start);
  d->p = q;
  /* an integer when it is written as one and fits, else a float */
  if (n < sizeof small) {
    memcpy(small, start, n);
    small[n] = '\0';
    if (lua_stringtonumber(d->L, small) != 0) return 0;
  } else {
    lua_pushlstring(d->L, start, n);
    size_t ok = lua_stringtonumber(d->L, lua_tostring(d->L, -1));
    lua_remove(d->L, ok ? -2 : -1);
    if (ok) return 0;
  }
  d->p = start;
  return fail(d, "a number out of range");
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

static void add_utf8(luaL_Buffer *b, unsigned cp) {
  char u[4];
  int n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  luaL_addlstring(b, u, (size_t)n);
}

/* d->p is at the opening quote. */
static int string(jdec *d) {
  const char *q = ++d->p;
  /* the common case: no escapes, one copy */
  while (q < d->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
    q++;
  if (q < d->end && *q == '"') {
    lua_pushlstring(d->L, d->p, (size_t)(q - d->p));
    d->p = q + 1;
    return 0;
  }
  luaL_Buffer b;
  luaL_buffinit(d->L, &b);
  for (;;) {
    const char *run = d->p;
    while (d->p < d->end && *d->p != '"' && *d->p != '\\' &&
           (unsigned char)*d->p >= 0x20)
      d->p++;
    luaL_addlstring(&b, run, (size_t)(d->p - run));
    if (d->p >= d->end) return fail(d, "an unterminated string");
    if (*d->p == '"') break;
    if (*d->p != '\\') return fail(d, "a control character in a string");
    if (d->end - d->p < 2) {
      d->p = d->end;
      return fail(d, "an unterminated string");
    }
    char c = d->p[1];
    const char *esc = strchr("\"\\/bfnrt", c);
    if (c != '\0' && esc != NULL) {
      luaL_addchar(&b, "\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"]);
      d->p += 2;
      continue;
    }
    if (c != 'u') return fail(d, "an invalid escape in a string");
    unsigned cp, lo;
    if (d->end - d->p < 6 || hex4(d->p + 2, &cp))
      return fail(d, "an invalid \\u escape");
    if (cp >= 0xDC00 && cp <= 0xDFFF)
      return fail(d, "a lone surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (d->end - d->p < 12 || d->p[6] != '\\' || d->p[7] != 'u' ||
          hex4(d->p + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
        return fail(d, "a lone surrogate in a \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      d->p += 6;
    }
    add_utf8(&b, cp);
    d->p += 6;
  }
  d->p++; /* the closing quote */
  luaL_pushresult(&b);
  return 0;
}

static int literal(jdec *d, const char *word, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
    return fail(d, "unexpected character");
  d->p += n;
  return 0;
}

static int value(jdec *d);

/* d->p is at '[' or '{'. */
static int container(jdec *d, int object) {
  lua_State *L = d->L;
  char close = object ? '}' : ']';
  lua_Integer n = 0;
  if (++d->depth > JSON_MAX_DEPTH)
    return fail(d, "arrays and objects nested too deep (over 1000 levels)");
  luaL_checkstack(L, 4, "tidal.http: JSON nesting");
  lua_newtable(L);
  d->p++;
  skip_ws(d);
  if (d->p < d->end && *d->p == close) {
    d->p++;
    d->depth--;
    return 0;
  }
  for (;;) {
    if (object) {
      skip_ws(d);
      if (d->p >= d->end || *d->p != '"')
        return fail(d, "expected a string (an object's key)");
      if (string(d)) return -1;
      skip_ws(d);
      if (d->p >= d->end || *d->p != ':')
        return fail(d, "expected ':' after an object's key");
      d->p++;
      if (value(d)) return -1;
      lua_rawset(L, -3); /* a repeated key: the last one wins */
    } else {
      if (value(d)) return -1;
      lua_rawseti(L, -2, ++n);
    }
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == close) {
      d->p++;
      d->depth--;
      return 0;
    }
    return fail(d, object ? "expected ',' or '}' in an object"
                          : "expected ',' or ']' in an array");
  }
}

static int value(jdec *d) {
  skip_ws(d);
  if (d->p >= d->end) return fail(d, "expected a value");
  switch (*d->p) {
  case '{':
    return container(d, 1);
  case '[':
    return container(d, 0);
  case '"':
    return string(d);
  case 't':
    if (literal(d, "true", 4)) return -1;
    lua_pushboolean(d->L, 1);
    return 0;
  case 'f':
    if (literal(d, "false", 5)) return -1;
    lua_pushboolean(d->L, 0);
    return 0;
  case 'n':
    if (literal(d, "null", 4)) return -1;
    lua_pushlightuserdata(d->L, NULL); /* cjson.null */
    return 0;
  default:
    if (*d->p == '-' || is_digit(*d->p)) return number(d);
    return fail(d, "expected a value");
  }
}

/* core._http_json(s) -> value | nil, message */
int http__json_decode(lua_State *L) {
  size_t n;
  jdec d;
  const char *s = luaL_checklstring(L, 1, &n);
  d.L = L;
  d.s = d.p = s;
  d.end = s + n;
  d.depth = 0;
  d.msg[0] = '\0';
  lua_settop(L, 1);
  if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) d.p += 3;
  if (value(&d) == 0) {
    skip_ws(&d);
    if (d.p == d.end) return 1;
    fail(&d, "unexpected data after the document");
  }
  lua_settop(L, 1);
  lua_pushnil(L);
  lua_pushstring(L, d.msg);
  return 2;
}
