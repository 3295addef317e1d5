/*
 * The emulator's stand-in for Google Identity Services' `https://accounts.google.com/gsi/client`:
 * the authorization code model of `google.accounts.oauth2` (initCodeClient, requestCode,
 * hasGrantedAllScopes, hasGrantedAnyScope), talking to this emulator's consent page.
 *
 * Plain ES2017 without a build step. The one global it touches is `window.google`, which it
 * extends rather than replaces, so it can sit beside other parts of Google's libraries.
 *
 * Popup mode opens the consent page with `redirect_uri=storagerelay://<scheme>/<host>?id=auth…`;
 * the page's last step posts `{code, scope, authuser, prompt, state?}` or `{error, state?}` to
 * this window. A message is taken only from the emulator's origin, from the popup of the
 * pending request, and with that request's `state`.
 */
(function (window) {
  'use strict';

  // Filled in by the emulator when it serves the script: its authorization endpoint (with the
  // base URL's path prefix) and the origin its consent page posts from.
  var SETTINGS = __GRANTKEEPER_EMULATOR_SETTINGS__;

  var POPUP_WIDTH = 500;
  var POPUP_HEIGHT = 600;
  // How often a pending popup is checked for having been closed. A popup found closed is
  // reported on the following check, so that an answer it posted just before closing wins.
  var CLOSED_POLL_MS = 500;

  // The fields of a CodeResponse (Google's documented ones, then the extras it sends).
  var RESPONSE_FIELDS = [
    'code', 'scope', 'state', 'error', 'error_description', 'error_uri',
    'authuser', 'prompt', 'hd'
  ];
  // Google answers with full scope URLs; apps may ask about the short names.
  var SCOPE_ALIASES = {
    email: 'https://www.googleapis.com/auth/userinfo.email',
    profile: 'https://www.googleapis.com/auth/userinfo.profile'
  };

  // The one request waiting for an answer: {popup, id, state, callback, errorCallback, timer,
  // closedSeen}. A new requestCode replaces it.
  var pending = null;

  function scopeString(scope) {
    if (Array.isArray(scope)) {
      return scope.join(' ');
    }
    return scope === undefined || scope === null ? '' : String(scope);
  }

  function normaliseScope(s) {
    return Object.prototype.hasOwnProperty.call(SCOPE_ALIASES, s) ? SCOPE_ALIASES[s] : s;
  }

  function scopeList(scope) {
    return scopeString(scope).split(/\s+/).filter(function (s) {
      return s.length > 0;
    }).map(normaliseScope);
  }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      if (value !== undefined && value !== null) {
        parts.push(encodeURIComponent(key) + '=' + encodeURIComponent(String(value)));
      }
    });
    return parts.join('&');
  }

  function randomId() {
    var n;
    var crypto = window.crypto;
    if (crypto && typeof crypto.getRandomValues === 'function') {
      var buf = new Uint32Array(1);
      crypto.getRandomValues(buf);
      n = buf[0];
    } else {
      n = Math.floor(Math.random() * 4294967296);
    }
    return 'auth' + String(n % 1000000).padStart(6, '0');
  }

  function merged(config, overrides) {
    var out = {};
    Object.keys(config).forEach(function (k) {
      out[k] = config[k];
    });
    if (overrides && typeof overrides === 'object') {
      Object.keys(overrides).forEach(function (k) {
        out[k] = overrides[k];
      });
    }
    return out;
  }

  function optionalString(value) {
    return value === undefined || value === null ? undefined : String(value);
  }

  function boolString(value, fallback) {
    if (value === undefined || value === null) {
      return fallback;
    }
    return value === true || value === 'true' ? 'true' : 'false';
  }

  // The authorization request of one requestCode, as Google's library sends it.
  function authUrl(config, redirectUri) {
    var prompts = [];
    if (config.prompt) {
      // Not part of Google's CodeClientConfig: accepted so tests can force the consent step.
      prompts.push(String(config.prompt));
    }
    if (config.select_account === true && prompts.join(' ').indexOf('select_account') < 0) {
      prompts.push('select_account');
    }
    var params = {
      client_id: String(config.client_id),
      scope: scopeString(config.scope),
      redirect_uri: redirectUri,
      response_type: 'code',
      // The code model is for servers that keep a refresh token.
      access_type: 'offline',
      // Google's documented default is true.
      include_granted_scopes: boolString(config.include_granted_scopes, 'true'),
      enable_granular_consent: boolString(config.enable_granular_consent, undefined),
      prompt: prompts.length > 0 ? prompts.join(' ') : undefined,
      login_hint: optionalString(config.login_hint),
      hd: optionalString(config.hd),
      state: optionalString(config.state)
    };
    return SETTINGS.authEndpoint + '?' + query(params);
  }

  function reportError(errorCallback, type, message) {
    if (typeof errorCallback === 'function') {
      errorCallback({ type: type, message: message });
    }
  }

  function stopPending() {
    var p = pending;
    pending = null;
    if (p && p.timer !== null) {
      window.clearInterval(p.timer);
    }
    return p;
  }

  function popupFeatures() {
    var number = function (v) {
      return typeof v === 'number' && isFinite(v) ? v : 0;
    };
    var left = number(window.screenX) + Math.max(0, (number(window.outerWidth) - POPUP_WIDTH) / 2);
    var top = number(window.screenY) + Math.max(0, (number(window.outerHeight) - POPUP_HEIGHT) / 2);
    return 'width=' + POPUP_WIDTH + ',height=' + POPUP_HEIGHT +
      ',left=' + Math.round(left) + ',top=' + Math.round(top);
  }

  function checkClosed() {
    var p = pending;
    if (!p) {
      return;
    }
    var closed;
    try {
      closed = p.popup.closed === true;
    } catch (e) {
      closed = false;
    }
    if (!closed) {
      p.closedSeen = false;
      return;
    }
    if (!p.closedSeen) {
      p.closedSeen = true;
      return;
    }
    stopPending();
    reportError(p.errorCallback, 'popup_closed', 'Popup window closed');
  }

  function requestPopup(config) {
    var previous = stopPending();
    if (previous) {
      try {
        previous.popup.close();
      } catch (e) {
        // The old popup may be gone already.
      }
    }
    var location = window.location;
    var scheme = String(location.protocol).replace(/:$/, '');
    var id = randomId();
    var redirectUri = 'storagerelay://' + scheme + '/' + location.host + '?id=' + id;
    var popup = null;
    try {
      popup = window.open(authUrl(config, redirectUri), 'g_emulator_oauth_' + id, popupFeatures());
    } catch (e) {
      popup = null;
    }
    if (!popup) {
      reportError(config.error_callback, 'popup_failed_to_open', 'Failed to open popup window');
      return;
    }
    pending = {
      popup: popup,
      id: id,
      state: optionalString(config.state),
      callback: config.callback,
      errorCallback: config.error_callback,
      timer: null,
      closedSeen: false
    };
    pending.timer = window.setInterval(checkClosed, CLOSED_POLL_MS);
  }

  function requestRedirect(config) {
    if (!config.redirect_uri) {
      throw new Error("google.accounts.oauth2: redirect_uri is required when ux_mode is 'redirect'");
    }
    stopPending();
    window.location.assign(authUrl(config, String(config.redirect_uri)));
  }

  function onMessage(event) {
    var p = pending;
    if (!p || event.origin !== SETTINGS.origin || event.source !== p.popup) {
      return;
    }
    var data = event.data;
    if (!data || typeof data !== 'object') {
      return;
    }
    if (typeof data.code !== 'string' && typeof data.error !== 'string') {
      return;
    }
    var state = typeof data.state === 'string' ? data.state : undefined;
    if (state !== p.state) {
      return;
    }
    var response = {};
    RESPONSE_FIELDS.forEach(function (field) {
      if (typeof data[field] === 'string') {
        response[field] = data[field];
      }
    });
    stopPending();
    if (typeof p.callback === 'function') {
      p.callback(response);
    }
  }

  function initCodeClient(config) {
    if (!config || typeof config !== 'object') {
      throw new Error('google.accounts.oauth2.initCodeClient: a CodeClientConfig is required');
    }
    if (!config.client_id) {
      throw new Error('google.accounts.oauth2.initCodeClient: missing required parameter client_id');
    }
    if (scopeList(config.scope).length === 0) {
      throw new Error('google.accounts.oauth2.initCodeClient: missing required parameter scope');
    }
    var base = merged(config, null);
    return {
      requestCode: function (overrides) {
        var c = merged(base, overrides);
        if (c.ux_mode === 'redirect') {
          requestRedirect(c);
        } else {
          requestPopup(c);
        }
      }
    };
  }

  function granted(response) {
    return response && typeof response === 'object' ? scopeList(response.scope) : [];
  }

  function hasGrantedAllScopes(response) {
    var have = granted(response);
    var wanted = Array.prototype.slice.call(arguments, 1).map(normaliseScope);
    return wanted.length > 0 && wanted.every(function (s) {
      return have.indexOf(s) >= 0;
    });
  }

  function hasGrantedAnyScope(response) {
    var have = granted(response);
    var wanted = Array.prototype.slice.call(arguments, 1).map(normaliseScope);
    return wanted.some(function (s) {
      return have.indexOf(s) >= 0;
    });
  }

  var google = window.google = window.google || {};
  var accounts = google.accounts = google.accounts || {};
  var oauth2 = accounts.oauth2 = accounts.oauth2 || {};
  oauth2.initCodeClient = initCodeClient;
  oauth2.hasGrantedAllScopes = hasGrantedAllScopes;
  oauth2.hasGrantedAnyScope = hasGrantedAnyScope;

  // Loaded twice, each copy listens for its own requests: a message matches at most one
  // pending popup.
  window.addEventListener('message', onMessage);
  if (typeof window.onGoogleLibraryLoad === 'function') {
    window.onGoogleLibraryLoad();
  }
})(window);
